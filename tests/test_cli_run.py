"""`sotopia-pi run`, `resume` and `episodes`, driven through the command line on replay models.

Each side and the judge read their own `replay:FILE` from its start, so every run is
deterministic. SOTOPIA's real profiles are imported where names and pairings matter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import Result

from sotopia_pi.profiles import Character
from sotopia_pi.store import Store

from .factories import GOOD_SCORES, action, judge_answer, seed_store
from .helpers import cli

DIMENSIONS = list(GOOD_SCORES)
TURN_FIELDS = {
    "index", "agent", "action_type", "argument", "latency_ms",
    "prompt_tokens", "cached_tokens", "completion_tokens",
}
OTHER_SCORES = {**GOOD_SCORES, "goal": 3, "secret": -4}


def one_json_document(result: Result) -> dict:
    """stdout must hold exactly one JSON document and nothing else."""
    return json.loads(result.stdout)


@pytest.fixture
def bike(store: Store) -> Store:
    seed_store(store)
    return store


@pytest.fixture
def sotopia(sotopia_dir: Path) -> Path:
    result = cli("import-sotopia", str(sotopia_dir))
    assert result.exit_code == 0, result.stderr
    return sotopia_dir


def episode_count() -> int:
    return len(one_json_document(cli("episodes", "list", "--json"))["episodes"])


def sotopia_records(directory: Path, filename: str) -> list[dict]:
    return [json.loads(line) for line in (directory / filename).read_text().splitlines() if line.strip()]


def short_run(replay, *extra: str, scenario: str = "bike_sale") -> Result:
    return cli(
        "run", "--scenario", scenario,
        "--agent1", replay("a", [action("speak", "Two-fifty, firm."), action("leave")]),
        "--agent2", replay("b", [action("speak", "How about 180?")]),
        "--judge", "", "--json", *extra,
    )


# -- the JSON document ----------------------------------------------------------------------


def test_run_prints_one_json_document_with_turns_and_terminal_scores(bike: Store, replay):
    result = cli(
        "run", "--scenario", "bike_sale",
        "--agent1", replay("a", [action("speak", "Two-fifty, firm."), action("leave")]),
        "--agent2", replay("b", [action("non-verbal communication", "frowns")]),
        "--judge", replay("judge", [judge_answer(), judge_answer(OTHER_SCORES)]),
        "--no-live-eval", "--json",
    )
    assert result.exit_code == 0, result.stderr
    document = one_json_document(result)
    assert document["status"] == "finished"
    assert document["scenario_id"] == "bike-sale"
    assert document["end_reason"] == "Ines Varga left the conversation"
    assert [a["character_id"] for a in document["agents"]] == ["ines", "tomas"]
    turns = document["turns"]
    assert all(TURN_FIELDS <= set(turn) for turn in turns)
    assert [(t["index"], t["agent"], t["action_type"], t["argument"]) for t in turns] == [
        (0, 1, "speak", "Two-fifty, firm."),
        (1, 2, "non-verbal communication", "frowns"),
        (2, 1, "leave", ""),
    ]
    counters = ("index", "agent", "prompt_tokens", "cached_tokens", "completion_tokens")
    assert all(isinstance(t[name], int) for t in turns for name in counters)
    first, second = document["evaluation"]["agents"]
    assert set(first["scores"]) == set(DIMENSIONS)
    assert first["scores"]["goal"] == {"score": 7, "reasoning": "because goal"}
    assert first["overall"] == pytest.approx(sum(GOOD_SCORES.values()) / 7, abs=1e-3)
    assert second["scores"]["secret"]["score"] == -4
    assert second["overall"] == pytest.approx(sum(OTHER_SCORES.values()) / 7, abs=1e-3)
    assert document["provisional_evaluations"] == 0
    assert document["id"] in result.stderr and "turn  0" in result.stderr


def test_a_judge_that_gives_out_is_a_failure_not_a_score(bike: Store, replay):
    result = cli(
        "run", "--scenario", "bike-sale",
        "--agent1", replay("a", [action("leave")]),
        "--agent2", replay("b", []),
        "--judge", replay("judge", [judge_answer()]),
        "--no-live-eval", "--json",
    )
    assert result.exit_code == 0, result.stderr
    first, second = one_json_document(result)["evaluation"]["agents"]
    assert first["overall"] == pytest.approx(sum(GOOD_SCORES.values()) / 7, abs=1e-3)
    assert "no more canned outputs" in second["failure"]
    assert "scores" not in second and "overall" not in second


def test_max_turns_ends_the_episode_at_the_limit(bike: Store, replay):
    talk = [action("speak", f"line {i}") for i in range(10)]
    result = cli(
        "run", "--scenario", "bike_sale", "--agent1", replay("a", talk), "--agent2", replay("b", talk),
        "--judge", "", "--max-turns", "3", "--json",
    )
    assert result.exit_code == 0, result.stderr
    document = one_json_document(result)
    assert len(document["turns"]) == 3 and document["max_turns"] == 3
    assert document["end_reason"] == "reached the turn limit (3)"
    assert document["evaluation"] is None


def test_no_live_eval_leaves_the_judge_to_the_terminal_score(bike: Store, replay):
    # Two judge answers are exactly enough for the terminal score of both sides: a live
    # evaluation would have used them up and turned the terminal score into failures.
    judge = replay("judge", [judge_answer(), judge_answer()])
    talk = [action("speak", f"line {i}") for i in range(4)]
    result = cli(
        "run", "--scenario", "bike_sale", "--agent1", replay("a", talk), "--agent2", replay("b", talk),
        "--judge", judge, "--max-turns", "4", "--no-live-eval", "--json",
    )
    assert result.exit_code == 0, result.stderr
    document = one_json_document(result)
    assert all("overall" in agent for agent in document["evaluation"]["agents"])
    assert document["provisional_evaluations"] == 0
    assert Store().episode(document["id"]).live_eval is False


def test_live_eval_shares_the_judge_without_spoiling_the_terminal_score(bike: Store, replay):
    judge = replay("judge", [judge_answer()] * 20)
    talk = [action("speak", f"line {i}") for i in range(4)]
    result = cli(
        "run", "--scenario", "bike_sale", "--agent1", replay("a", talk), "--agent2", replay("b", talk),
        "--judge", judge, "--max-turns", "4", "--json",
    )
    assert result.exit_code == 0, result.stderr
    document = one_json_document(result)
    assert all("overall" in agent for agent in document["evaluation"]["agents"])
    assert document["evaluation"]["after_turn"] == 3
    # how many provisional scores land depends on thread timing; never more than one per turn
    assert 0 <= document["provisional_evaluations"] <= 4
    assert Store().episode(document["id"]).live_eval is True


def test_text_output_without_json_lists_turns_and_scores(bike: Store, replay):
    result = cli(
        "run", "--scenario", "bike_sale",
        "--agent1", replay("a", [action("speak", "Two-fifty, firm."), action("leave")]),
        "--agent2", replay("b", [action("speak", "How about 180?")]),
        "--judge", replay("judge", [judge_answer(), judge_answer()]), "--no-live-eval",
    )
    assert result.exit_code == 0, result.stderr
    assert "Ines Varga: speak Two-fifty, firm." in result.stdout
    assert "overall 3.14" in result.stdout  # (8+2+5+0-1+1+7)/7


# -- choosing who plays -----------------------------------------------------------------------


def test_pairing_from_sotopia_picks_its_scenario_characters(sotopia: Path, replay):
    combo = sotopia_records(sotopia, "env_agent_combo_storages.jsonl")[0]
    result = short_run(replay, "--pairing", combo["combo_id"], scenario=combo["env_id"])
    assert result.exit_code == 0, result.stderr
    document = one_json_document(result)
    assert document["scenario_id"] == combo["env_id"]
    assert [a["character_id"] for a in document["agents"]] == combo["agent_ids"]


def test_pairing_of_another_scenario_is_refused(sotopia: Path, replay):
    combos = sotopia_records(sotopia, "env_agent_combo_storages.jsonl")
    other = next(c for c in combos if c["env_id"] != combos[0]["env_id"])
    result = short_run(replay, "--pairing", other["combo_id"], scenario=combos[0]["env_id"])
    assert result.exit_code == 1
    assert f"pairing {other['combo_id']} belongs to scenario {other['env_id']}" in result.stderr
    assert result.stdout == "" and episode_count() == 0


def test_characters_by_full_name_and_by_id(sotopia: Path, replay):
    profiles = sotopia_records(sotopia, "agent_profiles.jsonl")
    people = {f"{p['first_name']} {p['last_name']}": p["agent_id"] for p in profiles}
    chosen = f"Samuel Anderson, {people['Ava Thompson']}"
    result = short_run(replay, "--characters", chosen, scenario="borrow_money")
    assert result.exit_code == 0, result.stderr
    document = one_json_document(result)
    assert [a["name"] for a in document["agents"]] == ["Samuel Anderson", "Ava Thompson"]
    assert document["agents"][0]["character_id"] == people["Samuel Anderson"]


def test_ambiguous_character_name_is_a_clear_error(sotopia: Path, replay):
    result = short_run(replay, "--characters", "Ava,Samuel Anderson", scenario="borrow_money")
    assert result.exit_code == 1
    assert "'Ava' matches 2 characters" in result.stderr
    assert "Ava Martinez" in result.stderr and "Ava Thompson" in result.stderr
    assert result.stdout == "" and episode_count() == 0


def test_exact_full_name_wins_over_a_longer_name_that_contains_it(bike: Store, replay):
    bike.save_character(Character(id="ines-2", first_name="Ines", last_name="Vargas", age=50))
    result = short_run(replay, "--characters", "Ines Varga,tomas")
    assert result.exit_code == 0, result.stderr
    assert [a["character_id"] for a in one_json_document(result)["agents"]] == ["ines", "tomas"]
    assert short_run(replay, "--characters", "Ines V,tomas").exit_code == 1


@pytest.mark.parametrize(
    "characters, message",
    [
        ("Ines Varga", "two names or ids separated by a comma"),
        ("Ines Varga,", "two names or ids separated by a comma"),
        ("Ines Varga,Nobody", "no character has the id or name 'Nobody'"),
        ("ines,ines", "two different characters"),
    ],
)
def test_bad_characters_option(bike: Store, replay, characters: str, message: str):
    result = short_run(replay, "--characters", characters)
    assert result.exit_code == 1 and message in result.stderr
    assert episode_count() == 0


def test_pairing_and_characters_together_are_refused(sotopia: Path, replay):
    combo = sotopia_records(sotopia, "env_agent_combo_storages.jsonl")[0]
    result = short_run(replay, "--pairing", combo["combo_id"], "--characters", "Ava Thompson,Samuel Anderson",
                       scenario=combo["env_id"])
    assert result.exit_code == 1 and "either --pairing or --characters" in result.stderr


def test_scenario_by_codename_and_a_shared_codename(sotopia: Path, replay):
    scenarios = sotopia_records(sotopia, "environment_profiles.jsonl")
    borrow = next(s for s in scenarios if s["codename"] == "borrow_money")
    result = short_run(replay, scenario="borrow_money")
    assert result.exit_code == 0, result.stderr
    assert one_json_document(result)["scenario_id"] == borrow["env_id"]
    shared = short_run(replay, scenario="divide_things")
    assert shared.exit_code == 1
    assert "codename 'divide_things' is shared by several scenarios" in shared.stderr


# -- bad names store nothing ------------------------------------------------------------------


def test_unknown_scenario_is_an_error_and_stores_nothing(bike: Store, replay):
    result = short_run(replay, scenario="no_such_scenario")
    assert result.exit_code == 1
    assert "no scenario with id or codename 'no_such_scenario'" in result.stderr
    assert result.stdout == "" and episode_count() == 0


@pytest.mark.parametrize(
    "option, model, message",
    [
        ("--agent1", "gpt5", "unknown model kind 'gpt5'"),
        ("--agent2", "embedded:big", "`embedded` takes no argument"),
        ("--agent1", "catalog:no-such-model", "no model named 'no-such-model' in the catalog"),
        ("--agent2", "gguf:/nowhere/model.gguf", "GGUF file not found: /nowhere/model.gguf"),
        ("--judge", "replay:/nowhere/judge.json", "cannot read replay file /nowhere/judge.json"),
    ],
)
def test_a_model_that_cannot_be_named_or_loaded_stores_nothing(bike: Store, replay, option, model, message):
    models = {"--agent1": replay("a", [action("leave")]), "--agent2": replay("b", []), "--judge": ""}
    models[option] = model
    result = cli("run", "--scenario", "bike_sale", *[x for pair in models.items() for x in pair], "--json")
    assert result.exit_code == 1
    assert message in result.stderr and result.stderr.startswith("error: ")
    assert result.stdout == ""
    assert bike.counts()["episodes"] == 0


# -- listing and showing ----------------------------------------------------------------------


def test_episodes_list_is_newest_first_with_status_and_turn_count(bike: Store, replay):
    finished = one_json_document(short_run(replay))["id"]
    paused_run = cli(
        "run", "--scenario", "bike_sale", "--agent1", replay("a1", [action("speak", "hi")]),
        "--agent2", replay("b1", []), "--judge", "", "--json",
    )
    paused = one_json_document(paused_run)["id"]
    limited = one_json_document(short_run(replay, "--max-turns", "1"))["id"]
    rows = one_json_document(cli("episodes", "list", "--json"))["episodes"]
    assert [(r["id"], r["status"], r["turn_count"]) for r in rows] == [
        (limited, "finished", 1),
        (paused, "paused", 1),
        (finished, "finished", 3),
    ]
    only_paused = one_json_document(cli("episodes", "list", "--status", "paused", "--json"))["episodes"]
    assert [r["id"] for r in only_paused] == [paused]
    text = cli("episodes", "list").stdout.splitlines()
    assert [line.split()[0] for line in text] == [limited, paused, finished]


def test_episodes_list_when_empty(bike: Store):
    assert one_json_document(cli("episodes", "list", "--json")) == {"episodes": []}
    assert "no episodes yet" in cli("episodes", "list").stdout


def test_episodes_show_gives_back_the_run_document(bike: Store, replay):
    ran = one_json_document(short_run(replay))
    shown = cli("episodes", "show", ran["id"][:20], "--json")
    assert shown.exit_code == 0
    assert one_json_document(shown) == ran
    text = cli("episodes", "show", ran["id"]).stdout
    assert "Tomas Reyes: speak How about 180?" in text
    missing = cli("episodes", "show", "no-such-id")
    assert missing.exit_code == 1 and "no episode with id 'no-such-id'" in missing.stderr


# -- pausing and resuming ---------------------------------------------------------------------


def test_a_side_that_runs_out_pauses_then_resume_with_another_model_finishes(bike: Store, replay):
    side1 = replay("a", [action("speak", "Two-fifty."), action("speak", "Two-forty, last offer.")])
    result = cli(
        "run", "--scenario", "bike_sale", "--agent1", side1,
        "--agent2", replay("b", [action("speak", "Too much.")]),
        "--judge", replay("judge", [judge_answer(), judge_answer(OTHER_SCORES)]),
        "--no-live-eval", "--json",
    )
    assert result.exit_code == 2
    paused = one_json_document(result)
    episode_id = paused["id"]
    assert paused["status"] == "paused" and len(paused["turns"]) == 3
    assert "no more canned outputs" in paused["last_error"]
    assert f"sotopia-pi resume {episode_id}" in result.stderr
    assert "3 turns saved" in result.stderr

    other = replay("other", [action("leave")])
    resumed = cli("resume", episode_id[:22], "--agent2", other, "--json")
    assert resumed.exit_code == 0, resumed.stderr
    document = one_json_document(resumed)
    assert document["status"] == "finished" and document["last_error"] == ""
    assert document["turns"][:3] == paused["turns"]
    assert (document["turns"][3]["action_type"], document["turns"][3]["model"]) == ("leave", other)
    assert document["end_reason"] == "Tomas Reyes left the conversation"
    assert document["agents"][1]["model"] == other
    assert document["evaluation"]["agents"][1]["scores"]["goal"]["score"] == OTHER_SCORES["goal"]

    again = cli("resume", episode_id, "--json")
    assert again.exit_code == 0 and "already finished" in again.stderr
    assert one_json_document(again) == document


def test_resume_with_a_model_that_cannot_load_keeps_the_episode_as_it_was(bike: Store, replay):
    result = cli(
        "run", "--scenario", "bike_sale", "--agent1", replay("a", [action("speak", "hi")]),
        "--agent2", replay("b", []), "--judge", "", "--json",
    )
    assert result.exit_code == 2
    before = one_json_document(result)
    failed = cli("resume", before["id"], "--agent2", "gguf:/nowhere/model.gguf", "--json")
    assert failed.exit_code == 1
    assert "GGUF file not found" in failed.stderr and "unchanged" in failed.stderr
    after = bike.episode(before["id"])
    assert after.agent_models == [a["model"] for a in before["agents"]]
    assert after.status.value == "paused" and len(bike.turns(before["id"])) == 1


def test_resume_of_an_unknown_episode(bike: Store):
    result = cli("resume", "nope")
    assert result.exit_code == 1 and "no episode with id 'nope'" in result.stderr


# -- a person on stdin ------------------------------------------------------------------------


def test_a_human_side_plays_from_stdin(bike: Store, replay):
    result = cli(
        "run", "--scenario", "bike_sale", "--agent1", "human",
        "--agent2", replay("b", [action("speak", "How about 180?")]),
        "--judge", "", "--json",
        input="speak: hello\nleave\n",
    )
    assert result.exit_code == 0, result.stderr
    document = one_json_document(result)
    assert [(t["action_type"], t["argument"], t["by_human"]) for t in document["turns"]] == [
        ("speak", "hello", True),
        ("speak", "How about 180?", False),
        ("leave", "", True),
    ]
    assert document["turns"][0]["model"] == "human"
    assert "Your move" in result.stderr
    assert 'Tomas Reyes said: "How about 180?"' in result.stderr  # the person saw the partner's line


def test_resume_can_hand_a_side_to_a_person(bike: Store, replay):
    paused = cli(
        "run", "--scenario", "bike_sale", "--agent1", replay("a", [action("speak", "Two-fifty.")]),
        "--agent2", replay("b", [action("speak", "Too much.")]), "--judge", "", "--json",
    )
    assert paused.exit_code == 2
    episode_id = one_json_document(paused)["id"]
    resumed = cli("resume", episode_id, "--agent1", "human", "--json", input="Fine, two hundred.\nleave\n")
    assert resumed.exit_code == 0, resumed.stderr
    turns = one_json_document(resumed)["turns"]
    # side 2's replay file is read again from its start by the new process's backend
    assert [(t["index"], t["action_type"], t["argument"], t["by_human"]) for t in turns[2:]] == [
        (2, "speak", "Fine, two hundred.", True),
        (3, "speak", "Too much.", False),
        (4, "leave", "", True),
    ]
    assert bike.episode(episode_id).agent_models[0] == "human"


# -- the installed command, in its own process ------------------------------------------------


def test_the_console_script_exits_2_on_pause_with_only_json_on_stdout(bike: Store, replay):
    command = [sys.executable, "-c", "from sotopia_pi.cli import main; main()"]
    finished = subprocess.run(
        [*command, "run", "--scenario", "bike_sale", "--agent1", replay("a", [action("speak", "hi")]),
         "--agent2", replay("b", []), "--judge", "", "--json"],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )
    assert finished.returncode == 2, finished.stderr
    document = json.loads(finished.stdout)
    assert document["status"] == "paused"
    assert f"sotopia-pi resume {document['id']}" in finished.stderr


# -- option defaults come from the settings file ----------------------------------------------


def test_run_without_model_options_uses_the_saved_settings(bike: Store, replay):
    from sotopia_pi import config

    config.save(config.Settings(
        agent1_model=replay("a", [action("speak", "Two-fifty, firm."), action("speak", "No.")]),
        agent2_model=replay("b", [action("speak", "How about 180?")]),
        judge_model="",
        max_turns=3,
        live_eval=False,
    ))
    result = cli("run", "--scenario", "bike_sale", "--json")
    assert result.exit_code == 0, result.stderr
    document = one_json_document(result)
    assert document["max_turns"] == 3 and len(document["turns"]) == 3
    assert document["judge_model"] == "" and document["evaluation"] is None
    assert [a["model"] for a in document["agents"]] == [
        config.load().agent1_model, config.load().agent2_model
    ]


def test_run_options_beat_the_saved_settings(bike: Store, replay):
    from sotopia_pi import config

    config.save(config.Settings(max_turns=3, judge_model="embedded"))
    result = short_run(replay, "--max-turns", "5")
    assert result.exit_code == 0, result.stderr
    document = one_json_document(result)
    assert document["max_turns"] == 5 and document["judge_model"] == ""


def test_a_bad_settings_file_is_a_warning_and_the_defaults_play(bike: Store, replay):
    from sotopia_pi import config

    config.config_path().parent.mkdir(parents=True, exist_ok=True)
    config.config_path().write_text("max_turns = 0\n", encoding="utf-8")
    result = short_run(replay)
    assert result.exit_code == 0, result.stderr
    assert "warning:" in result.stderr and "max_turns" in result.stderr
    assert one_json_document(result)["max_turns"] == 20
