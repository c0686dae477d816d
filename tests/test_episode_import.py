"""Episode import (Sotopia's EpisodeLog rows and episode files, our exports, the expert corpus)
and the sotopia-episodes export.

The fixture files under tests/fixtures/sotopia_episodes/ were written by hand in Sotopia's
layouts, from the field lists of its EpisodeLog and its episode-file writer.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sotopia_pi.cli import app
from sotopia_pi.dataset.candidates import episode_candidates, load_candidates
from sotopia_pi.dataset.export import ExportFormat, SotopiaEpisodeRow, write_export
from sotopia_pi.dataset.snapshots import create_snapshot
from sotopia_pi.episode import ActionType, EpisodeStatus
from sotopia_pi.episode_import import (
    EXPERT_JUDGE,
    EpisodeImportError,
    evaluation_from_rewards,
    import_episode_file,
    import_episodes,
    import_expert_corpus,
)
from sotopia_pi.library.expert_corpus import EXPERT_MODEL
from sotopia_pi.library.sotopia_io import (
    SOTOPIA_ANY_AGE,
    character_to_sotopia,
    import_sotopia,
    scenario_from_sotopia,
    scenario_to_sotopia,
)
from sotopia_pi.prompts import messages_for_turn
from sotopia_pi.store import Store
from sotopia_pi.visibility import UNKNOWN, agent_view

from .curation_helpers import DEFAULT_ACTIONS, add_episode, seed_profiles
from .factories import bike_scenario, two_characters

FIXTURES = Path(__file__).parent / "fixtures" / "sotopia_episodes"
ROSA, KOFI = "01HQFIXTURE0000000000ROSA1", "01HQFIXTURE0000000000KOFI1"
LOG1, LOG3, EPI1 = "01HQFIXTURE000000000000LOG1", "01HQFIXTURE000000000000LOG3", "01HQFIXTURE00000000000EPI1"
SOTOPIA_DIMENSIONS = (
    "believability",
    "relationship",
    "knowledge",
    "secret",
    "social_rules",
    "financial_and_material_benefits",
    "goal",
)


def _where(report) -> set[tuple[str, int | None, str | None]]:
    return {(issue.file, issue.line, issue.field) for issue in report.errors}


# -- Sotopia's files ----------------------------------------------------------------------


def test_a_folder_imports_its_profiles_first_then_every_good_episode(store: Store):
    report = import_episodes(store, FIXTURES)

    assert (report.profiles.characters, report.profiles.scenarios, report.profiles.relationships) == (2, 1, 1)
    assert report.imported == 3 and sorted(report.episode_ids) == sorted([LOG1, LOG3, EPI1])
    assert _where(report) == {
        ("episodelogs.jsonl", 2, "messages[0][2]"),  # an action Sotopia never writes
        ("episodelogs.jsonl", 4, "environment"),  # a scenario nobody imported
        ("episodelogs.jsonl", 5, None),  # a line cut off mid-JSON
        ("sotopia_episodes.jsonl", 2, "agent_ids[1]"),  # a character nobody imported
        ("sotopia_episodes.jsonl", 3, "raw_messages"),  # the old layout without raw messages
    }
    unknown_scenario = next(issue for issue in report.errors if issue.field == "environment")
    assert "01HQFIXTURE0000000000NOENV" in unknown_scenario.message and "import-sotopia" in unknown_scenario.message
    assert not report.ok


def test_an_episodelog_row_becomes_an_ordinary_finished_episode(store: Store):
    import_episodes(store, FIXTURES)
    episode = store.episode(LOG1)
    assert episode.status is EpisodeStatus.finished
    assert episode.agent_ids == [ROSA, KOFI]
    assert episode.agent_models == ["gpt-4", "gpt-3.5-turbo"] and episode.judge_model == "gpt-4"
    assert episode.tags == ["fixture_gpt-4_gpt-3.5-turbo"]
    assert episode.end_reason == "Kofi Mensah left the conversation"

    turns = store.turns(LOG1)
    assert [(t.agent, t.action_type.value, t.argument) for t in turns] == [
        (0, "speak", "Fog's in for the night, I'm afraid. Nobody sensible goes out in this."),
        (1, "speak", "I have to be across tonight. Is there a boat I could hire?"),
        (0, "non-verbal communication", "shakes her head slowly"),
        (1, "action", "looks up the water-taxi number on his phone"),
        (0, "none", ""),  # a step where nobody acted: the idle turn of the agent whose turn it was
        (1, "leave", ""),
    ]
    assert [t.model for t in turns] == ["gpt-4", "gpt-3.5-turbo"] * 3

    # each prompt is what that agent saw: its own view, the partner's goal unknown
    scenario, characters = store.scenario(episode.scenario_id), (store.character(ROSA), store.character(KOFI))
    names = [c.name for c in characters]
    kofi_view = agent_view(scenario, characters, 1)
    assert turns[3].prompt == messages_for_turn("Kofi Mensah", kofi_view, turns[:3], names, 1)
    assert "Get to the mainland tonight" in turns[3].prompt[0].content
    assert f"Rosa Lindqvist's goal: {UNKNOWN}" in turns[3].prompt[0].content
    assert "Convince the other person" not in turns[3].prompt[0].content

    evaluation = store.terminal_evaluation(LOG1)
    assert evaluation.judge_model == "gpt-4" and evaluation.ok
    rosa, kofi = evaluation.agents
    assert set(rosa.scores) == set(SOTOPIA_DIMENSIONS)
    assert rosa.scores["goal"].score == 9 and rosa.scores["goal"].reasoning == "Kofi does not hire a boat tonight."
    assert kofi.scores["goal"].score == 4 and kofi.overall == pytest.approx(15 / 7)


def test_a_missing_score_stays_missing(store: Store):
    import_episodes(store, FIXTURES)
    rosa, kofi = store.terminal_evaluation(LOG3).agents
    # Sotopia's bare 0.0 reward is a failed evaluation, not a score of 0
    assert rosa.scores == {} and rosa.overall is None and rosa.failure
    # a dimension absent from the reward dict is absent from the scores
    assert "knowledge" not in kofi.scores and kofi.scores["goal"].score == 2 and kofi.overall == 1.5
    candidates = {c.side: c for c in episode_candidates(store, LOG3)}
    assert candidates[0].overall is None and candidates[0].judge_failure


def test_sotopias_episode_file_layout_imports(store: Store):
    import_episodes(store, FIXTURES)
    turns = store.turns(EPI1)
    assert [(t.agent, t.action_type) for t in turns] == [
        (0, ActionType.speak),
        (1, ActionType.speak),
        (0, ActionType.leave),
    ]
    assert store.episode(EPI1).tags == ["fixture_episode_file"]
    assert store.terminal_evaluation(EPI1).agents[1].scores["goal"].reasoning == "He will arrive in time, though not tonight."


def test_reimporting_adds_nothing(store: Store):
    import_episodes(store, FIXTURES)
    before = (store.counts()["episodes"], sum(len(store.turns(e.id)) for e in store.episodes()))
    evaluations = len(store.evaluations(LOG1))
    again = import_episodes(store, FIXTURES)
    assert again.imported == 0 and again.already_present == 3
    assert (store.counts()["episodes"], sum(len(store.turns(e.id)) for e in store.episodes())) == before
    assert len(store.evaluations(LOG1)) == evaluations


def test_an_episode_is_written_whole_or_not_at_all(store: Store):
    import_sotopia(store, FIXTURES)
    with store.transaction() as conn:  # the evaluation, written last, fails for one episode
        conn.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON evaluations WHEN NEW.episode_id = '{LOG1}' "
            "BEGIN SELECT RAISE(ABORT, 'disk gone'); END"
        )
    with pytest.raises(sqlite3.DatabaseError):
        import_episode_file(store, FIXTURES / "episodelogs.jsonl")
    assert store.turns(LOG1) == [] and store.evaluations(LOG1) == []
    assert LOG1 not in {episode.id for episode in store.episodes()}
    with store.transaction() as conn:
        conn.execute("DROP TRIGGER refuse")
    assert import_episode_file(store, FIXTURES / "episodelogs.jsonl").imported == 2
    assert len(store.turns(LOG1)) == 6


def test_a_fractional_score_is_rounded_with_a_note(store: Store):
    warnings: list[str] = []
    dims = {name: 1.0 for name in SOTOPIA_DIMENSIONS} | {"goal": 6.5, "overall_score": 1.8}
    evaluation = evaluation_from_rewards("e", [[1.8, dims], 0.0], "", "annotators", 3, "rewards", warnings)
    assert evaluation.agents[0].scores["goal"].score in (6, 7) and evaluation.agents[0].overall == 1.8
    assert warnings == ["rewards[0][1].goal: 6.5 is not a whole number; stored as 6"]
    assert evaluation.agents[1].failure and evaluation.agents[1].overall is None


def test_episodes_need_their_profiles(store: Store):
    report = import_episode_file(store, FIXTURES / "episodelogs.jsonl")
    assert report.imported == 0
    assert ("episodelogs.jsonl", 1, "environment") in _where(report)
    with pytest.raises(EpisodeImportError):
        import_episodes(store, FIXTURES / "no-such-file.jsonl")


def test_imported_episodes_curate_and_export_like_played_ones(store: Store, tmp_path: Path):
    import_episodes(store, FIXTURES)
    candidates = {(c.episode_id, c.side): c for c in load_candidates(store)}
    assert candidates[(LOG1, 0)].examples == 2 and candidates[(LOG1, 0)].scores["goal"] == 9
    snapshot = create_snapshot(store, "imported", [])
    out = tmp_path / "chat.jsonl"
    report = write_export(snapshot, ExportFormat.chat, out)
    assert report.rows > 0
    first = json.loads(out.read_text().splitlines()[0])
    assert first["messages"][0]["role"] == "system" and first["messages"][-1]["role"] == "assistant"


# -- round trips ----------------------------------------------------------------------------


@pytest.fixture
def played(store: Store) -> dict:
    seed_profiles(store)
    return {
        "strong": add_episode(store, (9, 3), minutes=0, tags=("round-1",)),
        "failed": add_episode(store, (10, 10), failed_side=1, minutes=1),
        "unjudged": add_episode(store, None, minutes=2),
    }


def _export(store: Store, name: str, fmt: ExportFormat, path: Path) -> dict[str, dict]:
    snapshot = create_snapshot(store, name, [])
    write_export(snapshot, fmt, path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    key = "pk" if fmt is ExportFormat.episodelog else "episode_id"
    return {row[key]: row for row in rows}


@pytest.mark.parametrize("fmt", [ExportFormat.episodelog, ExportFormat.sotopia_episodes])
def test_export_import_export_is_unchanged(store: Store, played: dict, tmp_path: Path, fmt: ExportFormat):
    first = _export(store, "first", fmt, tmp_path / "first.jsonl")
    assert set(first) == {episode.id for episode in played.values()}

    with Store(tmp_path / "other.sqlite3") as other:
        seed_profiles(other)
        report = import_episode_file(other, tmp_path / "first.jsonl")
        assert report.imported == 3 and report.ok
        assert other.terminal_evaluation(played["unjudged"].id) is None
        second = _export(other, "second", fmt, tmp_path / "second.jsonl")
    assert second == first

    # our own export read back into the store it came from adds nothing
    assert import_episode_file(store, tmp_path / "first.jsonl").already_present == 3


def test_sotopia_episode_rows_keep_every_turn(store: Store, played: dict, tmp_path: Path):
    rows = _export(store, "sotopia", ExportFormat.sotopia_episodes, tmp_path / "episodes.jsonl")
    row = SotopiaEpisodeRow.model_validate(rows[played["strong"].id])
    ines, tomas = two_characters()
    assert row.environment_id == "bike-sale" and row.codename == "bike_sale"
    assert row.experiment_tag == "round-1"
    assert row.social_goals == {ines.name: bike_scenario().agent_goals[0], tomas.name: bike_scenario().agent_goals[1]}
    assert row.agents_background[ines.name].endswith(f"Ines's secrets: {ines.secret}")
    # every action is in social_interactions, turn 0 included; idle turns leave an empty step
    spoken = [argument for kind, argument in DEFAULT_ACTIONS if kind in ("speak", "action", "non-verbal communication")]
    for argument in spoken:
        assert argument in row.social_interactions
    assert row.social_interactions.startswith(f'Ines Varga said: "{DEFAULT_ACTIONS[0][1]}"')
    # the observations end with a newline, as Sotopia writes them
    assert row.raw_messages[0][0][2].endswith("Conversation Starts:\n")
    assert all(step[0][2].endswith("\n") for step in row.raw_messages)
    assert len(row.rewards) == 2 and row.rewards[0][1]["goal"] == 9

    failed = SotopiaEpisodeRow.model_validate(rows[played["failed"].id])
    assert failed.raw_rewards[1] == 0.0 and failed.rewards == []  # Sotopia writes both scores or none


# -- profile rows -------------------------------------------------------------------------


def test_profile_rows_sotopia_accepts():
    ines, _ = two_characters()
    row = character_to_sotopia(ines)
    assert row["model_id"] == "" and row["agent_id"] == "ines"
    assert list(row)[-1] == "model_id"  # after mbti, as Sotopia's writer orders them
    scenario = bike_scenario()
    assert scenario.age_constraint is None
    assert scenario_to_sotopia(scenario)["age_constraint"] == SOTOPIA_ANY_AGE == "[(18, 70), (18, 70)]"
    assert scenario_from_sotopia(scenario_to_sotopia(scenario)) == scenario  # and read back as no constraint


# -- the expert corpus --------------------------------------------------------------------


def _judgment(goal: int) -> dict:
    scores = {name: {"score": 0, "reasoning": f"{name}: nothing notable."} for name in SOTOPIA_DIMENSIONS}
    scores["believability"] = {"score": 8, "reasoning": "Stays in character."}
    scores["goal"] = {"score": goal, "reasoning": "Part of the goal is met."}
    return scores


def _expert_file(directory: Path) -> Path:
    document = {
        "scenario": "adopt_rescue_dog",
        "split": "heldout",
        "episodes": [
            {
                "id": "adopt_rescue_dog-1",
                "quality": "expert",
                "flaw": "",
                "agents": ["mara-okafor", "quentin-fairweather"],
                "turns": [
                    {"action_type": "speak", "argument": "That greyhound has been in the window for months."},
                    {"action_type": "non-verbal communication", "argument": "glances at the sign, then away"},
                    {"action_type": "speak", "argument": "I would take the morning walks and the vet visits."},
                    {"action_type": "speak", "argument": "Can we talk about it after the summer?"},
                    {"action_type": "speak", "argument": "Two other families asked about her this week."},
                    {"action_type": "speak", "argument": "Then let us visit her together on Saturday."},
                ],
                "evaluation": [_judgment(7), _judgment(6)],
            },
            {
                "id": "adopt_rescue_dog-2",
                "quality": "poor",
                "flaw": "leaves-at-once",
                "agents": ["mara-okafor", "quentin-fairweather"],
                "turns": [{"action_type": "leave", "argument": ""}],
                "evaluation": [_judgment(0), _judgment(1)],
            },
        ],
    }
    path = directory / "adopt_rescue_dog.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_expert_corpus_imports_with_tags_models_and_full_judgments(store: Store, tmp_path: Path):
    corpus = tmp_path / "expert"
    corpus.mkdir()
    _expert_file(corpus)
    (corpus / "no_such_scenario.json").write_text(
        json.dumps({"scenario": "no_such_scenario", "split": "train", "episodes": []}), encoding="utf-8"
    )

    report = import_expert_corpus(store, corpus)
    assert report.imported == 2
    assert {issue.file for issue in report.errors} == {"no_such_scenario.json"}  # the good file still loads

    expert = store.episode("expert-adopt_rescue_dog-1")
    assert expert.status is EpisodeStatus.finished
    assert expert.agent_models == [EXPERT_MODEL, EXPERT_MODEL] and expert.judge_model == EXPERT_JUDGE
    assert expert.tags == ["expert", "quality:expert", "split:heldout"]
    assert expert.end_reason == "reached the turn limit (6)"
    turns = store.turns(expert.id)
    assert [t.agent for t in turns] == [0, 1, 0, 1, 0, 1]
    assert turns[2].prompt[-1].role == "user" and "Mara Okafor" in turns[2].prompt[0].content
    assert turns[2].prompt[2].content == turns[0].action.to_json()  # her own earlier turn, as JSON
    evaluation = store.terminal_evaluation(expert.id)
    assert evaluation.judge_model == EXPERT_JUDGE
    assert set(evaluation.agents[0].scores) == set(SOTOPIA_DIMENSIONS)
    assert evaluation.agents[0].scores["goal"].score == 7
    assert evaluation.agents[0].overall == pytest.approx(15 / 7)

    poor = store.episode("expert-adopt_rescue_dog-2")
    assert poor.tags == ["expert", "quality:poor", "split:heldout", "flaw:leaves-at-once"]
    assert poor.end_reason == "Mara Okafor left the conversation"

    again = import_expert_corpus(store, corpus)
    assert again.imported == 0 and again.already_present == 2


def test_a_folder_of_expert_files_is_read_as_the_corpus(store: Store, tmp_path: Path):
    _expert_file(tmp_path)
    report = import_episodes(store, tmp_path)
    assert report.imported == 2 and report.ok


# -- command line ---------------------------------------------------------------------------


def test_cli_reports_imports_and_skipped_rows_as_json(isolated_home: Path):
    result = CliRunner().invoke(app, ["import-episodes", str(FIXTURES), "--json"])
    assert result.exit_code == 1  # some rows were skipped
    report = json.loads(result.stdout)
    assert report["imported"] == 3 and len(report["errors"]) == 5
    again = CliRunner().invoke(app, ["import-episodes", str(FIXTURES), "--json"])
    assert json.loads(again.stdout)["already_present"] == 3
    assert CliRunner().invoke(app, ["import-episodes"]).exit_code == 1
