"""The built-in scenario library: counts, validation with file/field errors, pairings, install."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sotopia_pi import paths
from sotopia_pi.cli import app
from sotopia_pi.library import (
    CATEGORIES,
    LIBRARY_SOURCE,
    LibraryError,
    RecordError,
    character_to_toml,
    ensure_library,
    install_library,
    load_library,
    relationship_to_toml,
    save_authored_character,
    save_authored_scenario,
    scenario_from_dict,
    scenario_to_toml,
    validate_character,
    validate_scenario,
    write_scenario_file,
)
from sotopia_pi.profiles import Character, Relationship, RelationshipLevel, valid_pairs
from sotopia_pi.store import Store


@pytest.fixture(scope="module")
def library():
    return load_library()


@pytest.fixture
def library_copy(tmp_path: Path) -> Path:
    """A private copy of the built-in library to break on purpose."""
    target = tmp_path / "scenarios"
    shutil.copytree(paths.library_dir(), target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def problems_of(root: Path) -> list[str]:
    with pytest.raises(LibraryError) as caught:
        load_library(root)
    return [str(problem) for problem in caught.value.problems]


# -- the built-in library ------------------------------------------------------------------


def test_library_has_the_promised_counts(library):
    assert len(library.characters) >= 30
    assert len(library.scenarios) >= 40
    assert len(library.seed_prompts) >= 200
    categories = {s.category for s in library.scenarios}
    assert categories == set(CATEGORIES)
    assert {s.relationship for s in library.scenarios} == set(RelationshipLevel)
    assert {r.relationship for r in library.relationships} == set(RelationshipLevel)
    assert all(s.source == LIBRARY_SOURCE for s in library.scenarios)


def test_every_scenario_has_two_goals_and_five_pairs(library):
    for scenario in library.scenarios:
        assert len(scenario.agent_goals) == 2, scenario.codename
        assert all(goal.strip() for goal in scenario.agent_goals), scenario.codename
        assert library.pair_count(scenario) >= 5, scenario.codename


def test_characters_have_full_profiles_within_the_age_range(library):
    for character in library.characters:
        assert 18 <= character.age <= 70, character.id
        assert validate_character(character.model_dump()) == [], character.id
        assert character.secret and character.personality_and_values and character.decision_making_style


def test_dilemmas_ask_for_a_decision_that_can_be_read_off(library):
    dilemmas = [s for s in library.scenarios if s.category == "dilemma"]
    assert len(dilemmas) >= 5
    for scenario in dilemmas:
        for goal in scenario.agent_goals:
            assert re.search(r'"I [^"]+"', goal), f"{scenario.codename}: no quoted decision in {goal!r}"


def test_scenario_text_names_nobody(library):
    names = {part for c in library.characters for part in (c.first_name, c.last_name)}
    for scenario in library.scenarios:
        for text in [scenario.scenario, *scenario.agent_goals]:
            assert not any(re.search(rf"\b{re.escape(name)}\b", text) for name in names), scenario.codename


def test_summary_reports_counts(library):
    summary = library.summary()
    assert summary["scenarios"] == len(library.scenarios)
    assert sum(summary["scenarios_per_category"].values()) == len(library.scenarios)
    assert sum(summary["scenarios_per_level"].values()) == len(library.scenarios)
    assert summary["min_valid_pairs"] == min(library.pair_count(s) for s in library.scenarios)


# -- broken libraries ----------------------------------------------------------------------


def test_a_lost_goal_names_the_file_and_field(library_copy):
    path = library_copy / "scenarios" / "used_cargo_bike.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    text = path.read_text(encoding="utf-8")
    second_goal = text.index('    """', text.index("agent_goals") + 20)
    path.write_text(text[:second_goal] + "]\n", encoding="utf-8")
    assert len(tomllib.loads(path.read_text(encoding="utf-8"))["agent_goals"]) == 1 < len(data["agent_goals"])
    found = problems_of(library_copy)
    assert any(
        p.startswith("scenarios/scenarios/used_cargo_bike.toml: agent_goals:") and "at least 2" in p for p in found
    ), found


def test_a_level_with_too_few_pairs_is_reported(library_copy):
    # bank_app_help needs a young and an older character; no family pair fits that
    edit(library_copy / "scenarios" / "bank_app_help.toml", 'relationship = "stranger"', 'relationship = "family_member"')
    found = problems_of(library_copy)
    assert len(found) == 1
    assert found[0].startswith("scenarios/scenarios/bank_app_help.toml: relationship:")
    assert "at least 5" in found[0]


def test_dangling_and_duplicate_references_are_reported(library_copy):
    relationships = library_copy / "relationships.toml"
    edit(relationships, 'agent2_id = "tobi-okafor"', 'agent2_id = "tobi-okafro"')
    with relationships.open("a", encoding="utf-8") as file:
        file.write('\n[[relationship]]\nagent1_id = "tobi-okafor"\nagent2_id = "grace-okafor"\n'
                   'relationship = "friend"\nbackground_story = "Again."\n')
    characters = library_copy / "characters.toml"
    edit(characters, 'id = "noor-rahimi"', 'id = "hana-sato"')
    found = problems_of(library_copy)
    assert any(
        re.match(r"scenarios/relationships.toml:\d+: relationship mara-okafor/tobi-okafro: agent2_id: no character", p)
        for p in found
    ), found
    assert any("relationships.toml" in p and "already has a relationship" in p for p in found), found
    assert any(re.match(r"scenarios/characters.toml:\d+: character hana-sato: id: duplicate id", p) for p in found), found


def test_every_problem_is_reported_at_once(library_copy):
    edit(library_copy / "characters.toml", "age = 34", "age = 12")
    edit(library_copy / "characters.toml", 'secret = "He owes', 'nothing = "He owes')
    edit(library_copy / "scenarios" / "persistent_cough.toml", 'category = "persuasion"', 'category = "gossip"')
    edit(library_copy / "scenarios" / "road_trip_budget.toml", "Cover as much", "He wants to cover as much")
    edit(library_copy / "scenarios" / "tenant_petition.toml", "<extra_info>The tenancy", "<extra_info The tenancy")
    found = problems_of(library_copy)
    expected = [
        r"characters.toml:\d+: character mara-okafor: age: must be between 18 and 70",
        r"characters.toml:\d+: character tobi-okafor: secret: is required",
        r"characters.toml:\d+: character tobi-okafor: nothing: Extra inputs are not permitted",
        r"scenarios/persistent_cough.toml: category: must be one of",
        r"scenarios/road_trip_budget.toml: agent_goals.0: must be gender-neutral; found 'He'",
        r"scenarios/tenant_petition.toml: agent_goals.0: </extra_info> .* closes no open <extra_info>",
    ]
    for pattern in expected:
        assert any(re.search(pattern, p) for p in found), (pattern, found)


def test_bad_toml_names_the_line(library_copy):
    edit(library_copy / "scenarios" / "sunny_garden_plot.toml", 'category = "competition"', "category = competition")
    found = problems_of(library_copy)
    assert len(found) == 1
    assert found[0].startswith("scenarios/scenarios/sunny_garden_plot.toml: not valid TOML")
    assert "line 2" in found[0]


def test_codename_must_match_the_file_and_names_are_caught(library_copy):
    edit(library_copy / "scenarios" / "board_game_swap.toml", 'codename = "board_game_swap"', 'codename = "game_swap"')
    edit(library_copy / "scenarios" / "borrow_the_car.toml", "One family member wants", "Mateo wants")
    found = problems_of(library_copy)
    assert any("board_game_swap.toml: codename: codename 'game_swap' must match" in p for p in found), found
    assert any("borrow_the_car.toml: scenario: names the character 'Mateo'" in p for p in found), found


def test_duplicate_seed_prompts_are_reported(library_copy):
    seeds = library_copy / "seed_prompts.txt"
    first = [line for line in seeds.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")][0]
    with seeds.open("a", encoding="utf-8") as file:
        file.write(first.upper() + "\n")
    found = problems_of(library_copy)
    assert len(found) == 1 and re.match(r"scenarios/seed_prompts.txt:\d+: duplicate of line \d+", found[0])


# -- single-record validation and export ---------------------------------------------------


def test_validate_scenario_gives_field_level_errors():
    good = {
        "codename": "shared_ladder",
        "category": "cooperation",
        "relationship": "acquaintance",
        "scenario": "Two neighbours share one long ladder and both need it this Saturday morning.",
        "agent_goals": ["Use the ladder first to clear your gutters.", "Paint your window frames before the rain."],
    }
    assert validate_scenario(good) == []
    assert scenario_from_dict(good).id == "shared_ladder"
    bad = dict(good, codename="Shared Ladder", category="chores", relationship=9, agent_goals=["Only one goal here."])
    fields = {error.field for error in validate_scenario(bad)}
    assert {"codename", "category", "relationship", "agent_goals"} <= fields
    gendered = dict(good, scenario="One neighbour lends his ladder to the other one on a windy Saturday.")
    assert [e.field for e in validate_scenario(gendered)] == ["scenario"]


def test_validate_character_gives_field_level_errors(library):
    data = library.characters[0].model_dump()
    assert validate_character(data) == []
    broken = dict(data, age=15, secret="", id="Mara Okafor", shoe_size=42)
    fields = {error.field for error in validate_character(broken)}
    assert {"age", "secret", "id", "shoe_size"} <= fields


def test_export_reads_back_identically(library):
    for scenario in library.scenarios:
        text = scenario_to_toml(scenario)
        assert scenario_from_dict(tomllib.loads(text)) == scenario
    for character in library.characters:
        assert Character.model_validate(tomllib.loads(character_to_toml(character))["character"][0]) == character
    for relationship in library.relationships:
        data = tomllib.loads(relationship_to_toml(relationship))["relationship"][0]
        data.setdefault("id", f"{data['agent1_id']}--{data['agent2_id']}")
        assert Relationship.model_validate(data) == relationship


def test_export_survives_awkward_text(library):
    awkward = 'Quotes """ inside, a trailing quote", a back\\slash, a tab\tand\nnew lines  with  double spaces '
    scenario = library.scenarios[0].model_copy(update={"scenario": awkward * 3, "agent_goals": [awkward, awkward + "x"]})
    assert scenario_from_dict(tomllib.loads(scenario_to_toml(scenario))) == scenario


def test_an_exported_scenario_loads_as_part_of_the_library(library_copy, library):
    scenario = library.scenario("used_cargo_bike").model_copy(
        update={"codename": "used_tandem", "id": "used_tandem", "scenario": "A tandem bicycle is for sale. " * 3}
    )
    (library_copy / "scenarios" / "used_tandem.toml").write_text(scenario_to_toml(scenario), encoding="utf-8")
    assert load_library(library_copy).scenario("used_tandem") == scenario


# -- authoring -----------------------------------------------------------------------------


LADDER = {
    "codename": "used_cargo_bike",  # shared with a library scenario on purpose
    "category": "cooperation",
    "relationship": "friend",
    "scenario": "Two friends share one long ladder and both need it on the same Saturday morning.",
    "agent_goals": ["Use the ladder first to clear your gutters before the rain.", "Paint your window frames while it is dry."],
}


def test_authored_scenario_is_stored_with_pairings_and_never_overwrites(store, library_copy):
    ensure_library(store)
    scenario, pairings = save_authored_scenario(store, LADDER)
    assert scenario.id != "used_cargo_bike" and store.scenario("used_cargo_bike").category == "negotiation"
    assert len(pairings) == 5 and {p.id for p in store.pairings(scenario.id)} == {p.id for p in pairings}
    assert all(RelationshipLevel.friend in _levels(store, p.agent_ids) for p in pairings)
    path = write_scenario_file(scenario.model_copy(update={"codename": "shared_ladder"}), library_copy)
    assert path == library_copy / "scenarios" / "shared_ladder.toml"
    assert load_library(library_copy).scenario(scenario.id).scenario == LADDER["scenario"]
    with pytest.raises(FileExistsError):
        write_scenario_file(scenario.model_copy(update={"codename": "shared_ladder"}), library_copy)


def test_authored_records_with_errors_save_nothing(store):
    ensure_library(store)
    before = store.counts()
    with pytest.raises(RecordError) as caught:
        save_authored_scenario(store, dict(LADDER, agent_goals=["Just one goal for both of them."]))
    assert [e.field for e in caught.value.errors] == ["agent_goals"]
    with pytest.raises(RecordError) as caught:
        save_authored_character(store, {"first_name": "Ada", "last_name": "Quill", "age": 90})
    fields = {e.field for e in caught.value.errors}
    assert {"age", "secret", "occupation"} <= fields
    assert store.counts() == before


def test_authored_character_gets_a_readable_id(store, library):
    data = library.character_map["mara-okafor"].model_dump()
    data.pop("id")
    character = save_authored_character(store, data)
    assert character.id == "mara-okafor"
    again = save_authored_character(store, data)
    assert again.id == "mara-okafor-2"


# -- installing into the store -------------------------------------------------------------


def test_install_creates_pairings_that_fit_their_level(store, library):
    report = ensure_library(store)
    assert report is not None and report.pairings_created == 5 * len(library.scenarios)
    characters = {c.id: c for c in store.characters()}
    relationships = store.relationships()
    for scenario in store.scenarios():
        pairings = store.pairings(scenario.id)
        assert len(pairings) == 5
        assert len({frozenset(p.agent_ids) for p in pairings}) == 5
        allowed = set(valid_pairs(scenario, characters, relationships))
        for pairing in pairings:
            assert tuple(pairing.agent_ids) in allowed, (scenario.codename, pairing.agent_ids)


def test_install_is_deterministic_and_runs_once(tmp_path, library):
    with Store(tmp_path / "a.sqlite3") as first, Store(tmp_path / "b.sqlite3") as second:
        assert ensure_library(first) is not None
        assert ensure_library(second) is not None
        assert ensure_library(first) is None  # unchanged files: nothing to do
        pairs_a = sorted(tuple(p.agent_ids) + (p.scenario_id,) for p in first.pairings())
        pairs_b = sorted(tuple(p.agent_ids) + (p.scenario_id,) for p in second.pairings())
        assert pairs_a == pairs_b


def test_reinstall_after_an_edit_replaces_pairings_that_broke(store, library_copy):
    ensure_library(store, library_copy)
    before = store.pairings("persistent_cough")
    assert before and all(
        RelationshipLevel.friend in _levels(store, p.agent_ids) for p in before
    )
    edit(library_copy / "scenarios" / "persistent_cough.toml", 'relationship = "friend"', 'relationship = "family_member"')
    report = ensure_library(store, library_copy)
    assert report is not None and report.pairings_removed == 5 and report.pairings_created == 5
    after = store.pairings("persistent_cough")
    assert len(after) == 5
    assert all(RelationshipLevel.family_member in _levels(store, p.agent_ids) for p in after)
    assert store.scenario("persistent_cough").relationship == RelationshipLevel.family_member


def _levels(store: Store, agent_ids: list[str]) -> set[RelationshipLevel]:
    return {r.relationship for r in store.relationships() if {r.agent1_id, r.agent2_id} == set(agent_ids)}


def test_install_keeps_pairings_that_still_fit(store, library):
    install_library(store, library)
    before = {p.id for p in store.pairings()}
    report = install_library(store, library)
    assert report.pairings_created == 0 and report.pairings_removed == 0
    assert {p.id for p in store.pairings()} == before


# -- the command line ----------------------------------------------------------------------


def test_cli_library_check_json(library):
    result = CliRunner().invoke(app, ["library", "check", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["scenarios"] == len(library.scenarios)
    assert report["seed_prompts"] == len(library.seed_prompts)
    assert report["min_valid_pairs"] >= 5


def test_cli_library_check_reports_problems(library_copy):
    edit(library_copy / "scenarios" / "used_cargo_bike.toml", 'category = "negotiation"', 'category = "haggling"')
    result = CliRunner().invoke(app, ["library", "check", "--path", str(library_copy), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["errors"] == [
        "scenarios/scenarios/used_cargo_bike.toml: category: must be one of "
        + ", ".join(CATEGORIES)
        + " (got 'haggling')"
    ]
