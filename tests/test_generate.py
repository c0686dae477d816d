"""Scenario generation: retries, rejection, seed bookkeeping, pairings; one run on the real model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sotopia_pi.backends import create_backend
from sotopia_pi.backends.replay import ReplayBackend
from sotopia_pi.cli import app
from sotopia_pi.library import RecordError, ensure_library, load_library, scenario_to_dict
from sotopia_pi.library.generate import (
    GENERATED_SOURCE,
    GenerationError,
    SeedUsed,
    find_duplicate,
    generate_scenarios,
    generation_schema,
    parse_answer,
    propose_scenario,
    save_proposal,
    seed_for_scenario,
    unused_seeds,
    used_seeds,
)
from sotopia_pi.profiles import RelationshipLevel, valid_pairs


def answer(
    context: str = (
        "Two people sharing a small allotment disagree about whether to plant vegetables or flowers "
        "in the last free bed this spring."
    ),
    goals: tuple[str, ...] = (
        "Plant vegetables in the free bed, because you want to cut your grocery bill this summer.",
        "Plant flowers in the free bed, because you are preparing the allotment for a wedding photo shoot.",
    ),
    relationship: str = "acquaintance",
    title: str = "allotment_last_bed",
    kind: str = "negotiation",
) -> str:
    return json.dumps({"context": context, "goals": list(goals), "relationship": relationship, "title": title, "type": kind})


@pytest.fixture(scope="module")
def library():
    return load_library()


def check_stored(store, generated) -> None:
    """A stored generated scenario is valid, has playable pairings and a recorded seed."""
    scenario = store.scenario(generated.scenario.id)
    assert scenario == generated.scenario
    assert scenario.source == GENERATED_SOURCE
    assert len(scenario.agent_goals) == 2
    pairings = store.pairings(scenario.id)
    assert 1 <= len(pairings) <= 5
    allowed = set(valid_pairs(scenario, {c.id: c for c in store.characters()}, store.relationships()))
    assert all(tuple(p.agent_ids) in allowed for p in pairings)
    assert seed_for_scenario(store, scenario.id)["seed"] == generated.seed


def test_invalid_then_duplicate_then_valid(store, library):
    copied = library.scenario("used_cargo_bike")
    outputs = [
        '{"context": "cut off',
        answer(context=copied.scenario + " It is raining.", title="bike_deal"),
        answer(),
    ]
    backend = ReplayBackend(outputs)
    report = generate_scenarios(store, backend, 1, library=library, rng=random.Random(1))
    assert [a.accepted for a in report.attempts] == [False, False, True]
    assert report.attempts[0].problem.startswith("invalid: not valid JSON")
    assert report.attempts[1].problem == "duplicate: scenario text repeats used_cargo_bike"
    assert len(report.generated) == 1 and report.complete
    generated = report.generated[0]
    assert generated.attempts == 3
    assert generated.scenario.codename == "allotment_last_bed"
    assert generated.scenario.relationship == RelationshipLevel.acquaintance
    assert len(generated.pairings) == 5
    check_stored(store, generated)
    # every attempt got the same seed, one existing scenario as its example, and the schema
    assert all(generated.seed in call[-1].content for call in backend.calls)
    assert len(store.scenarios()) == len(library.scenarios) + 1


def test_failed_answers_store_nothing_and_leave_seeds_unused(store, library):
    outputs = [
        answer(goals=("Only one goal, which is not enough for a scenario.",)),
        answer(context="He wants the last bed of the allotment for his vegetables and nobody else's plans matter."),
        answer(goals=("Plant flowers in the free bed this spring, please.", "Plant flowers in the free bed this spring, please!")),
        answer(
            goals=(
                "You want the bed: drei_agenda2018.com x_1 y_2 z_3 w_4 v_5 u_6 q_7 and more words here",
                "Plant flowers in the free bed this spring, please.",
            )
        ),
    ]
    ensure_library(store)
    before = len(store.scenarios())
    report = generate_scenarios(
        store, ReplayBackend(outputs), 1, library=library, attempts_per_seed=2, seeds_per_scenario=2, rng=random.Random(2)
    )
    assert report.generated == [] and not report.complete
    problems = [a.problem for a in report.attempts]
    assert problems[0].startswith("invalid: goals: List should have at least 2 items")
    assert "must be gender-neutral; found 'He'" in problems[1]
    assert "the two goals are identical" in problems[2]
    assert "does not read as sentences" in problems[3]
    assert len({a.seed for a in report.attempts}) == 2  # moved on to a second seed
    assert len(store.scenarios()) == before
    assert used_seeds(store) == {}
    assert len(unused_seeds(store, library)) == len(library.seed_prompts)


def test_seeds_are_never_reused(store, library):
    first = generate_scenarios(store, ReplayBackend([answer()]), 1, library=library, rng=random.Random(5))
    second_answer = answer(
        context="Two coworkers must agree who will present the quarterly figures when only one slot is left on the agenda.",
        goals=(
            "Present the figures yourself because a promotion panel is watching.",
            "Present them yourself because you did most of the analysis.",
        ),
        relationship="friend",
        title="quarterly_figures_slot",
        kind="competition",
    )
    # the same random choices would pick the same seed again, if it were still unused
    second = generate_scenarios(store, ReplayBackend([second_answer]), 1, library=library, rng=random.Random(5))
    seeds = [first.generated[0].seed, second.generated[0].seed]
    assert seeds[0] != seeds[1]
    assert set(used_seeds(store)) == set(seeds)
    assert used_seeds(store)[seeds[1]]["scenario_id"] == second.generated[0].scenario.id
    assert len(unused_seeds(store, library)) == len(library.seed_prompts) - 2
    check_stored(store, second.generated[0])


def test_a_proposal_stores_nothing_until_saved_and_a_dropped_one_leaves_its_seed_unused(store, library):
    ensure_library(store)
    before = len(store.scenarios())
    seed = library.seed_prompts[0]
    proposal = propose_scenario(store, ReplayBackend(['{"context": "cut', answer()]), seed, rng=random.Random(3))
    assert [a.accepted for a in proposal.attempts] == [False, True]
    assert proposal.scenario is not None and proposal.scenario.codename == "allotment_last_bed"
    assert len(proposal.pairs) == 5 and proposal.example_id
    assert len(store.scenarios()) == before and used_seeds(store) == {}  # a preview only
    generated = save_proposal(store, proposal)
    check_stored(store, generated)
    assert generated.attempts == 2 and generated.seed == seed
    with pytest.raises(SeedUsed):  # a second save of the same seed is refused
        save_proposal(store, proposal.model_copy(update={"scenario": proposal.scenario.model_copy(update={"id": "other"})}))
    assert len(store.scenarios()) == before + 1


def test_an_edited_proposal_is_checked_then_stored_with_pairings_that_fit_the_edit(store, library):
    ensure_library(store)
    seed = library.seed_prompts[1]
    proposal = propose_scenario(store, ReplayBackend([answer()]), seed, rng=random.Random(4))
    edit = scenario_to_dict(proposal.scenario)
    edit["agent_goals"] = [edit["agent_goals"][0], ""]
    with pytest.raises(RecordError) as refused:
        save_proposal(store, proposal, edit)
    assert [e.field for e in refused.value.errors] == ["agent_goals"]
    edit["agent_goals"] = library.scenario("used_cargo_bike").agent_goals
    edit["scenario"] = library.scenario("used_cargo_bike").scenario
    with pytest.raises(RecordError, match="duplicate: scenario text repeats used_cargo_bike"):
        save_proposal(store, proposal, edit)
    assert used_seeds(store) == {}  # refused edits claim nothing
    edit = scenario_to_dict(proposal.scenario)
    edit["relationship"] = "family_member"
    edit["agent_goals"] = [
        edit["agent_goals"][0],
        "Plant herbs in the free bed, because a relative asked you to grow them for a family recipe.",
    ]
    generated = save_proposal(store, proposal, edit)
    check_stored(store, generated)
    assert generated.scenario.relationship == RelationshipLevel.family_member
    assert generated.scenario.agent_goals[1].startswith("Plant herbs")
    assert generated.scenario.id == proposal.scenario.id


def test_a_proposal_with_no_passing_answer_cannot_be_saved(store, library):
    ensure_library(store)
    proposal = propose_scenario(
        store, ReplayBackend(["not json", "[]"]), library.seed_prompts[2], attempts_per_seed=2, rng=random.Random(5)
    )
    assert proposal.scenario is None and [a.accepted for a in proposal.attempts] == [False, False]
    with pytest.raises(GenerationError, match="nothing to save"):
        save_proposal(store, proposal)
    assert used_seeds(store) == {}


def test_broken_hint_tags_are_repaired_not_fatal(store, library):
    goals = (
        "Plant vegetables in the bed. <extra_info>You need them for a stall",
        "Plant flowers </strategy_hint> in the free bed this spring.",
    )
    report = generate_scenarios(store, ReplayBackend([answer(goals=goals)]), 1, library=library, rng=random.Random(8))
    scenario = report.generated[0].scenario
    assert scenario.agent_goals == [
        "Plant vegetables in the bed. <extra_info>You need them for a stall</extra_info>",
        "Plant flowers  in the free bed this spring.",
    ]
    assert report.attempts[0].note == "hint tags repaired"


def test_a_level_nobody_can_play_is_rejected(store, library):
    ensure_library(store)
    with store.transaction() as conn:
        conn.execute("DELETE FROM relationships WHERE level=?", (int(RelationshipLevel.family_member),))
    report = generate_scenarios(
        store, ReplayBackend([answer(relationship="family_member"), answer()]), 1, library=library, rng=random.Random(3)
    )
    assert report.attempts[0].problem == "unplayable: no character pair has a family_member relationship"
    assert report.generated[0].scenario.relationship == RelationshipLevel.acquaintance


def test_a_copied_title_over_new_text_is_renamed_after_the_seed(store, library):
    report = generate_scenarios(store, ReplayBackend([answer(title="used_cargo_bike")]), 1, library=library, rng=random.Random(4))
    generated = report.generated[0]
    assert generated.scenario.codename != "used_cargo_bike"
    assert "was taken" in report.attempts[-1].note
    assert store.scenario("used_cargo_bike").id == "used_cargo_bike"


def test_a_model_naming_a_character_is_rejected(store, library):
    named = answer(context="Mara and a neighbour disagree about whether to plant vegetables or flowers in the last free bed.")
    report = generate_scenarios(store, ReplayBackend([named, answer()]), 1, library=library, rng=random.Random(6))
    assert report.attempts[0].problem == "invalid: names the character 'Mara'"
    assert report.complete


def test_duplicates_are_found_and_library_scenarios_are_distinct(library):
    original = library.scenario("reclined_seat_flight")
    near = original.model_copy(update={"codename": "seat_recline", "scenario": original.scenario.replace("nine-hour", "ten-hour")})
    assert "repeats reclined_seat_flight" in find_duplicate(near, library.scenarios)
    assert find_duplicate(original.model_copy(update={"codename": "reclined_seat_flights"}), [original])
    for scenario in library.scenarios:
        assert find_duplicate(scenario, [s for s in library.scenarios if s is not scenario]) is None, scenario.codename


def test_schema_bounds_every_string_and_enumerates_the_closed_sets():
    schema = generation_schema()
    props = schema["properties"]
    assert props["relationship"]["enum"] == [level.name for level in RelationshipLevel]
    assert "maxLength" in props["context"] and "maxLength" in props["title"]
    assert "maxLength" in props["goals"]["items"] and props["goals"]["minItems"] == props["goals"]["maxItems"] == 2
    assert list(props) == sorted(props)  # llama.cpp writes properties in sorted order
    assert parse_answer(answer()).agent_goals[1].startswith("Plant flowers")


def test_cli_generate_json_stores_scenarios(tmp_path: Path):
    replay = tmp_path / "answers.json"
    replay.write_text(json.dumps(["not json", answer()]), encoding="utf-8")
    result = CliRunner().invoke(app, ["generate", "--count", "1", "--model", f"replay:{replay}", "--json", "--random-seed", "1"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert len(document["scenarios"]) == 1
    assert len(document["scenarios"][0]["pairings"]) == 5
    assert document["rejected"][0]["problem"].startswith("invalid: not valid JSON")


def test_cli_generate_without_a_model_uses_the_settings_judge(tmp_path: Path):
    from sotopia_pi import config

    replay = tmp_path / "answers.json"
    replay.write_text(json.dumps([answer()]), encoding="utf-8")
    config.save(config.Settings(judge_model=f"replay:{replay}"))
    result = CliRunner().invoke(app, ["generate", "--count", "1", "--json", "--random-seed", "1"])
    assert result.exit_code == 0, result.output
    assert f"with replay:{replay}" in result.stderr
    assert config.Settings(judge_model="").generation_model == "embedded"


def test_cli_generate_reports_a_shortfall(tmp_path: Path):
    replay = tmp_path / "answers.json"
    replay.write_text(json.dumps([answer(), "[]"]), encoding="utf-8")
    result = CliRunner().invoke(
        app, ["generate", "--count", "2", "--model", f"replay:{replay}", "--attempts", "1", "--seeds", "1"]
    )
    assert result.exit_code == 1
    assert "stored 1 of 2" in result.stderr


@pytest.mark.slow
def test_embedded_model_generates_valid_scenarios_from_unused_seeds(store, library):
    earlier = generate_scenarios(store, ReplayBackend([answer()]), 1, library=library, rng=random.Random(11))
    taken = set(used_seeds(store))
    backend = create_backend("embedded", seed=11)
    try:
        # the same random choices would start from the seed the replay run just used
        report = generate_scenarios(store, backend, 2, library=library, rng=random.Random(11))
    finally:
        backend.close()
    assert report.complete, [a.problem for a in report.attempts]
    seeds = [generated.seed for generated in report.generated]
    assert len(set(seeds)) == 2 and not taken & set(seeds) and set(seeds) <= set(library.seed_prompts)
    assert set(used_seeds(store)) == taken | set(seeds)
    for generated in report.generated:
        assert generated.model == "embedded"
        check_stored(store, generated)
    assert len(store.scenarios()) == len(library.scenarios) + 1 + 2
    assert earlier.generated[0].scenario.id not in {g.scenario.id for g in report.generated}
