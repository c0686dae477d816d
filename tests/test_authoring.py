"""Authoring characters: relationships saved through validation, and export to the library format."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from sotopia_pi import paths
from sotopia_pi.library import (
    RecordError,
    character_from_dict,
    ensure_library,
    export_character,
    load_library,
    save_authored_character,
    save_authored_relationship,
)
from sotopia_pi.profiles import Relationship, RelationshipLevel, Scenario, valid_pairs
from sotopia_pi.store import Store

NEW_CHARACTER = {
    "first_name": "Ilse",
    "last_name": "Brandvold",
    "age": 41,
    "occupation": "ferry captain",
    "gender": "Woman",
    "gender_pronoun": "She/her",
    "public_info": "Runs the last ferry of the night across the fjord and knows every regular by their coffee order.",
    "big_five": "Openness to Experience - Low; Conscientiousness - High; Extraversion - Medium; Agreeableness - Medium; Neuroticism - Low",
    "moral_values": ["Loyalty", "Authority"],
    "schwartz_personal_values": ["Security", "Tradition"],
    "personality_and_values": "Ilse is calm, dry and exact; she trusts routines over promises and says so.",
    "decision_making_style": "Cautious, rule-bound",
    "secret": "She once sailed in weather she had banned the crew from sailing in, and nobody found out.",
    "mbti": "ISTJ",
}


@pytest.fixture
def stocked(store: Store) -> Store:
    """The store with the built-in library and one authored character, 'ilse-brandvold'."""
    ensure_library(store)
    save_authored_character(store, NEW_CHARACTER)
    return store


STORY = "They met on the night ferry and have argued about the timetable ever since."


def pairs_with(store: Store, scenario: Scenario, character_id: str) -> list[tuple[str, str]]:
    characters = {c.id: c for c in store.characters()}
    return [pair for pair in valid_pairs(scenario, characters, store.relationships()) if character_id in pair]


# -- save_authored_relationship ---------------------------------------------------------------


def test_relationship_is_stored_and_lets_the_character_play_scenarios_at_its_level(stocked: Store):
    friend_scenario = next(s for s in stocked.scenarios() if s.relationship == RelationshipLevel.friend and not s.age_constraint
                           and not s.occupation_constraint and not s.agent_constraint)
    assert pairs_with(stocked, friend_scenario, "ilse-brandvold") == []
    saved = save_authored_relationship(
        stocked, {"agent1_id": "ilse-brandvold", "agent2_id": "mara-okafor", "relationship": "friend", "background_story": STORY}
    )
    assert saved.id == "ilse-brandvold--mara-okafor"
    assert saved.relationship == RelationshipLevel.friend
    assert saved in stocked.relationships()
    assert set(pairs_with(stocked, friend_scenario, "ilse-brandvold")) == {
        ("ilse-brandvold", "mara-okafor"),
        ("mara-okafor", "ilse-brandvold"),
    }


def test_relating_a_pair_again_updates_its_record_instead_of_adding_one(stocked: Store):
    save_authored_relationship(
        stocked, {"agent1_id": "ilse-brandvold", "agent2_id": "mara-okafor", "relationship": 3, "background_story": STORY}
    )
    count = len(stocked.relationships())
    # named the other way round, with a new level and story
    again = save_authored_relationship(
        stocked, {"agent1_id": "mara-okafor", "agent2_id": "ilse-brandvold", "relationship": "stranger", "background_story": "Never met."}
    )
    assert len(stocked.relationships()) == count
    assert (again.id, again.agent1_id, again.agent2_id) == ("ilse-brandvold--mara-okafor", "ilse-brandvold", "mara-okafor")
    stored = [r for r in stocked.relationships() if r.id == again.id]
    assert [(r.relationship, r.background_story) for r in stored] == [(RelationshipLevel.stranger, "Never met.")]


def test_a_library_pair_keeps_its_own_id_when_updated(stocked: Store):
    library_pair = next(r for r in stocked.relationships() if {r.agent1_id, r.agent2_id} == {"mara-okafor", "tobi-okafor"})
    count = len(stocked.relationships())
    updated = save_authored_relationship(
        stocked, {"agent1_id": "tobi-okafor", "agent2_id": "mara-okafor", "relationship": "family_member", "background_story": "Rewritten."}
    )
    assert updated.id == library_pair.id and len(stocked.relationships()) == count


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"relationship": "cousin"}, "relationship", "cousin"),
        ({"relationship": 9}, "relationship", "9"),
        ({"agent2_id": "nobody-here"}, "agent2_id", "nobody-here"),
        ({"agent1_id": ""}, "agent1_id", "required"),
        ({"agent2_id": "ilse-brandvold"}, "agent2_id", "different"),
        ({"background_story": "  "}, "background_story", "required"),
    ],
)
def test_bad_relationships_name_the_field_and_save_nothing(stocked: Store, change: dict, field: str, words: str):
    before = stocked.relationships()
    data = {"agent1_id": "ilse-brandvold", "agent2_id": "mara-okafor", "relationship": "friend", "background_story": STORY}
    with pytest.raises(RecordError) as caught:
        save_authored_relationship(stocked, {**data, **change})
    assert field in [error.field for error in caught.value.errors]
    assert words in str(caught.value)
    assert stocked.relationships() == before


def test_a_missing_level_is_reported_not_defaulted(stocked: Store):
    with pytest.raises(RecordError) as caught:
        save_authored_relationship(stocked, {"agent1_id": "ilse-brandvold", "agent2_id": "mara-okafor", "background_story": STORY})
    assert [error.field for error in caught.value.errors] == ["relationship"]


# -- export_character -------------------------------------------------------------------------


def tables(path: Path, key: str) -> list[dict]:
    return tomllib.loads(path.read_text(encoding="utf-8"))[key]


def test_export_into_an_empty_folder_writes_files_that_load_back(stocked: Store, tmp_path: Path):
    save_authored_relationship(
        stocked, {"agent1_id": "ilse-brandvold", "agent2_id": "mara-okafor", "relationship": "friend", "background_story": STORY}
    )
    root = tmp_path / "export"
    written = export_character(stocked, "ilse-brandvold", root)
    assert written == [root / "characters.toml", root / "relationships.toml"]
    [character] = tables(root / "characters.toml", "character")
    assert character_from_dict(character) == stocked.character("ilse-brandvold")
    [relationship] = tables(root / "relationships.toml", "relationship")
    assert relationship == {
        "agent1_id": "ilse-brandvold",
        "agent2_id": "mara-okafor",  # not in root, but in the built-in library
        "relationship": "friend",
        "background_story": STORY,
    }
    assert Relationship.model_validate({"id": "x", **relationship}).relationship == RelationshipLevel.friend


def test_relationships_to_characters_outside_both_libraries_are_left_out(stocked: Store, tmp_path: Path):
    other = save_authored_character(stocked, dict(NEW_CHARACTER, first_name="Odd", last_name="Brandvold"))
    save_authored_relationship(
        stocked, {"agent1_id": "ilse-brandvold", "agent2_id": other.id, "relationship": "family_member", "background_story": STORY}
    )
    assert export_character(stocked, "ilse-brandvold", tmp_path) == [tmp_path / "characters.toml"]
    assert not (tmp_path / "relationships.toml").exists()
    # once the other character is exported too, the relationship goes with it
    written = export_character(stocked, other.id, tmp_path)
    assert written == [tmp_path / "characters.toml", tmp_path / "relationships.toml"]
    assert [t["id"] for t in tables(tmp_path / "characters.toml", "character")] == ["ilse-brandvold", other.id]
    assert len(tables(tmp_path / "relationships.toml", "relationship")) == 1


def test_reexport_replaces_the_table_and_keeps_the_rest_of_the_file(stocked: Store, tmp_path: Path):
    root = tmp_path / "scenarios"
    shutil.copytree(paths.library_dir(), root)
    original = (root / "characters.toml").read_text(encoding="utf-8")
    save_authored_relationship(
        stocked, {"agent1_id": "ilse-brandvold", "agent2_id": "mara-okafor", "relationship": "friend", "background_story": STORY}
    )
    export_character(stocked, "ilse-brandvold", root)
    save_authored_character(stocked, dict(NEW_CHARACTER, id="ilse-brandvold", age=42))
    save_authored_relationship(
        stocked,
        {"agent1_id": "ilse-brandvold", "agent2_id": "mara-okafor", "relationship": "acquaintance", "background_story": "Nodding terms."},
    )
    export_character(stocked, "ilse-brandvold", root)

    text = (root / "characters.toml").read_text(encoding="utf-8")
    assert text.startswith(original.rstrip("\n"))  # leading comment and every other table untouched
    exported = [t for t in tables(root / "characters.toml", "character") if t["id"] == "ilse-brandvold"]
    assert [t["age"] for t in exported] == [42]
    related = [t for t in tables(root / "relationships.toml", "relationship") if "ilse-brandvold" in (t["agent1_id"], t["agent2_id"])]
    assert [(t["relationship"], t["background_story"]) for t in related] == [("acquaintance", "Nodding terms.")]
    library = load_library(root)  # the whole folder is still a valid library
    assert library.character_map["ilse-brandvold"].age == 42


def test_reexport_of_a_library_character_replaces_it_in_place(stocked: Store, tmp_path: Path):
    root = tmp_path / "scenarios"
    shutil.copytree(paths.library_dir(), root)
    before = tables(root / "characters.toml", "character")
    edited = dict(before[0], occupation="night-shift charge nurse")
    save_authored_character(stocked, edited)
    export_character(stocked, before[0]["id"], root)
    after = tables(root / "characters.toml", "character")
    assert [t["id"] for t in after] == [t["id"] for t in before]
    assert after[0]["occupation"] == "night-shift charge nurse" and after[1:] == before[1:]
    text = (root / "characters.toml").read_text(encoding="utf-8")
    assert text.count('id = "mara-okafor"') == 1


def test_export_refuses_a_file_it_cannot_edit_and_leaves_it_alone(stocked: Store, tmp_path: Path):
    broken = tmp_path / "characters.toml"
    broken.write_text("[[character]\nid = oops\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid TOML"):
        export_character(stocked, "ilse-brandvold", tmp_path)
    assert broken.read_text(encoding="utf-8") == "[[character]\nid = oops\n"


def test_export_refuses_a_character_that_is_not_library_valid(stocked: Store, tmp_path: Path):
    incomplete = stocked.character("ilse-brandvold").model_copy(update={"id": "half-done", "secret": ""})
    stocked.save_character(incomplete)
    with pytest.raises(RecordError) as caught:
        export_character(stocked, "half-done", tmp_path)
    assert [error.field for error in caught.value.errors] == ["secret"]
    assert not (tmp_path / "characters.toml").exists()


def test_a_stored_character_with_a_non_library_id_can_be_edited_but_not_created(store: Store):
    imported_id = "01JABCDEFGHJKMNPQRSTVWXYZ0"  # a SOTOPIA import keeps its ULID
    with pytest.raises(RecordError) as refused:
        save_authored_character(store, {**NEW_CHARACTER, "id": imported_id})
    assert [e.field for e in refused.value.errors] == ["id"]
    store.save_character(character_from_dict({**NEW_CHARACTER, "id": "placeholder"}).model_copy(update={"id": imported_id}))
    edited = save_authored_character(store, {**NEW_CHARACTER, "id": imported_id, "age": 42})
    assert edited.id == imported_id and store.character(imported_id).age == 42
    with pytest.raises(RecordError, match="lower-case words"):  # the library's files still need readable ids
        export_character(store, imported_id, store.path.parent / "export")
