"""SOTOPIA compatibility: importing its real benchmark files, exporting them back, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sotopia_pi.cli import app
from sotopia_pi.library import load_library
from sotopia_pi.library.sotopia_io import (
    SOTOPIA_FILES,
    SOTOPIA_HARD_SCENARIO_IDS,
    FieldProblem,
    character_from_sotopia,
    check_hint_tags,
    export_sotopia,
    import_sotopia,
    parse_age_constraint,
    parse_agent_constraint,
    parse_occupation_constraint,
)
from sotopia_pi.profiles import Character, Pairing, Relationship, RelationshipLevel, Scenario
from sotopia_pi.store import Store

AMARA = "01H5TNE5PRCAF1CK5ERS5MVZ22"
MOVIE_SCENE = "01H7VFHP0AW0C23DV6ZG0B4HCE"
DRINK_LESS = "01H7VFHP29TCH457PBDVF7WFDS"
GALAXY_SALE = "01H7VFHPQQQY6H4DNC6NBQ8XTG"
LEND_MONEY = "01H7VFHN1PK2FXY7TPWQK343BQ"
FILE_NAMES = list(SOTOPIA_FILES.values())


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _everything(store: Store) -> dict[str, list]:
    """All profiles keyed by id, so two stores can be compared record by record."""
    return {
        "characters": sorted(store.characters(), key=lambda r: r.id),
        "scenarios": sorted(store.scenarios(), key=lambda r: r.id),
        "relationships": sorted(store.relationships(), key=lambda r: r.id),
        "pairings": sorted(store.pairings(), key=lambda r: r.id),
    }


@pytest.fixture
def imported(store: Store, sotopia_dir: Path) -> Store:
    report = import_sotopia(store, sotopia_dir)
    assert report.errors == []
    return store


# -- the real data --------------------------------------------------------------------------


def test_real_data_imports_completely(store: Store, sotopia_dir: Path):
    report = import_sotopia(store, sotopia_dir)
    assert (report.characters, report.scenarios, report.relationships, report.pairings) == (40, 90, 120, 450)
    assert report.errors == []
    counts = store.counts()
    assert (counts["characters"], counts["scenarios"], counts["relationships"], counts["pairings"]) == (
        40, 90, 120, 450,
    )  # fmt: skip


def test_ids_are_sotopias_ids(imported: Store, sotopia_dir: Path):
    for kind, id_key in (("characters", "agent_id"), ("scenarios", "env_id")):
        ids = {row[id_key] for row in _lines(sotopia_dir / SOTOPIA_FILES[kind])}
        stored = {record.id for record in getattr(imported, kind)()}
        assert stored == ids
    amara = imported.character(AMARA)
    assert (amara.first_name, amara.last_name, amara.age) == ("Amara", "Hartley", 29)


def test_string_digit_relationships_become_levels(imported: Store):
    rel = next(r for r in imported.relationships() if r.id == "01H6HH23F98GTVRDHENWZ9C8C6")
    assert rel.relationship is RelationshipLevel.romantic_relationship
    assert (rel.agent1_id, rel.agent2_id) == ("01H5TNE5PJTHMQ1Q3T398YN990", "01H5TNE5PBKCFDAK6293NKYJ4D")
    assert imported.scenario("01H7VFHP3DPGRXH1Y500VQKFZA").relationship is RelationshipLevel.friend
    levels = [s.relationship for s in imported.scenarios()]
    assert {level: levels.count(level) for level in set(levels)} == {3: 46, 0: 25, 2: 10, 4: 5, 1: 4}


def test_constraints_are_parsed(imported: Store):
    assert imported.scenario(DRINK_LESS).age_constraint == [(21, 70), (21, 70)]
    movie = imported.scenario(MOVIE_SCENE)
    assert movie.occupation_constraint == [["actor"], ["actor"]]
    assert movie.age_constraint is None  # SOTOPIA's default "[(18, 70), (18, 70)]" means no constraint
    others = [s for s in imported.scenarios() if s.id != MOVIE_SCENE]
    assert all(s.occupation_constraint is None for s in others)
    assert all(s.agent_constraint is None for s in imported.scenarios())


def test_list_items_lose_their_leading_spaces(imported: Store):
    amara = imported.character(AMARA)
    assert amara.moral_values == ["Care", "Fairness"]
    assert amara.schwartz_personal_values == ["Universalism", "Benevolence", "Self-Direction"]
    for character in imported.characters():
        for item in character.moral_values + character.schwartz_personal_values:
            assert item == item.strip() and item


def test_backslash_apostrophes_are_unescaped_but_kept_in_the_source(imported: Store):
    sale = imported.scenario(GALAXY_SALE)
    assert "Here's what the seller has to say" in sale.scenario
    assert "Here\\'s" in imported.source_record("scenarios", GALAXY_SALE)["scenario"]
    assert not any("\\'" in s.scenario or any("\\'" in g for g in s.agent_goals) for s in imported.scenarios())


def test_hint_tags_stay_in_goals_including_nested_ones(imported: Store):
    goal = imported.scenario(LEND_MONEY).agent_goals[1]
    extra = goal.index("<extra_info>")
    hint = goal.index("<clarification_hint>")
    assert extra < hint < goal.index("</clarification_hint>") < goal.index("</extra_info>")
    assert goal == imported.source_record("scenarios", LEND_MONEY)["agent_goals"][1]


def test_pairings_keep_scenario_and_slot_order(imported: Store):
    pairing = imported.pairing("01H7ZM14XBH3G2E5HM586T902Y")
    assert pairing.scenario_id == "01H7VFHNK78PAEH6MRVYMTSEFX"
    assert pairing.agent_ids == ["01H5TNE5PAATSHM0K9ACWKN79P", "01H5TNE5P98J20AEW94XQ0KC35"]
    assert all(len(imported.pairings(s.id)) == 5 for s in imported.scenarios())


def test_sotopia_hard_ids_name_fourteen_real_scenarios(imported: Store):
    assert len(set(SOTOPIA_HARD_SCENARIO_IDS)) == 14
    codenames = {imported.scenario(scenario_id).codename for scenario_id in SOTOPIA_HARD_SCENARIO_IDS}
    assert {"revenge_plot", "share_blanket", "divide_items", "craigslist_bargains_00007"} <= codenames


def test_reimport_is_idempotent(imported: Store, sotopia_dir: Path):
    before = _everything(imported)
    report = import_sotopia(imported, sotopia_dir)
    assert report.errors == [] and report.pairings == 450
    assert imported.counts()["pairings"] == 450 and imported.counts()["characters"] == 40
    assert _everything(imported) == before


# -- export ---------------------------------------------------------------------------------


def test_export_reproduces_the_original_files(imported: Store, sotopia_dir: Path, tmp_path: Path):
    report = export_sotopia(imported, tmp_path / "out")
    assert (report.characters, report.scenarios, report.relationships, report.pairings) == (40, 90, 120, 450)
    assert report.rewritten == 0
    for name in FILE_NAMES:
        assert _lines(tmp_path / "out" / name) == _lines(sotopia_dir / name), name
        assert (tmp_path / "out" / name).read_bytes() == (sotopia_dir / name).read_bytes(), name


def test_import_export_import_is_lossless(imported: Store, tmp_path: Path):
    export_sotopia(imported, tmp_path / "out")
    with Store(tmp_path / "second.sqlite3") as second:
        report = import_sotopia(second, tmp_path / "out")
        assert report.errors == []
        assert _everything(second) == _everything(imported)


def test_edited_and_new_records_are_written_in_sotopia_conventions(imported: Store, tmp_path: Path):
    amara = imported.character(AMARA)
    amara.secret = "Keeps a ledger of every favour owed to her"
    imported.save_character(amara)
    newcomer = Character(first_name="Noor", last_name="Haddad", age=34, moral_values=["Care"], tag="mine")
    imported.save_character(newcomer)
    friends = Relationship(agent1_id=AMARA, agent2_id=newcomer.id, relationship=RelationshipLevel.friend)
    imported.save_relationship(friends)
    scenario = Scenario(scenario="Two friends split a restaurant bill.", agent_goals=["Pay less", "Pay half"],
                        relationship=RelationshipLevel.friend, codename="split_bill")  # fmt: skip
    imported.save_scenario(scenario)
    imported.save_pairing(Pairing(scenario_id=scenario.id, agent_ids=[AMARA, newcomer.id]))

    report = export_sotopia(imported, tmp_path / "out")
    assert report.rewritten == 5
    characters = _lines(tmp_path / "out" / "agent_profiles.jsonl")
    first = characters[0]
    assert first["agent_id"] == AMARA and first["secret"] == amara.secret
    assert first["moral_values"] == ["Care", "Fairness"]
    assert characters[-1]["agent_id"] == newcomer.id and characters[-1]["tag"] == "mine"
    written = _lines(tmp_path / "out" / "environment_profiles.jsonl")[-1]
    assert written["env_id"] == scenario.id
    assert written["relationship"] == "3"
    assert (written["occupation_constraint"], written["agent_constraint"]) == ("nan", "none")
    relationship = _lines(tmp_path / "out" / "relationship_profiles.jsonl")[-1]
    assert relationship["relationship"] == "3" and relationship["agent2_id"] == newcomer.id

    with Store(tmp_path / "second.sqlite3") as second:
        assert import_sotopia(second, tmp_path / "out").errors == []
        assert _everything(second) == _everything(imported)


def test_constraints_written_by_us_read_back(imported: Store, tmp_path: Path):
    movie = imported.scenario(MOVIE_SCENE)
    movie.occupation_constraint = [["actor", "stunt double"], ["director"]]
    movie.agent_constraint = [[AMARA], []]
    movie.age_constraint = [(25, 60), (18, 70)]
    imported.save_scenario(movie)
    export_sotopia(imported, tmp_path / "out")
    line = next(r for r in _lines(tmp_path / "out" / "environment_profiles.jsonl") if r["env_id"] == MOVIE_SCENE)
    assert line["age_constraint"] == "[(25, 60), (18, 70)]"
    with Store(tmp_path / "second.sqlite3") as second:
        import_sotopia(second, tmp_path / "out")
        assert second.scenario(MOVIE_SCENE) == movie


# -- malformed input ------------------------------------------------------------------------

GOOD_CHARACTER = {"agent_id": "C1", "first_name": "Ines", "last_name": "Varga", "age": 40,
                  "moral_values": ["Care", " Liberty"]}  # fmt: skip
OTHER_CHARACTER = {"agent_id": "C2", "first_name": "Tomas", "last_name": "Ruiz", "age": 52}
GOOD_SCENARIO = {"env_id": "E1", "codename": "lost_keys", "scenario": "Two neighbours find a set of keys.",
                 "agent_goals": ["Keep the keys (<extra_info>They open your shed.</extra_info>)", "Return the keys"],
                 "relationship": "2", "age_constraint": "[(18, 70), (18, 70)]",
                 "occupation_constraint": "nan", "agent_constraint": "none"}  # fmt: skip


def _write_jsonl(path: Path, lines: list[dict | str]) -> None:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


@pytest.fixture
def malformed_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "malformed"
    folder.mkdir()
    _write_jsonl(folder / "agent_profiles.jsonl", [
        GOOD_CHARACTER,
        '{"agent_id": "C9", "first_name": "Broken"',  # line 2: invalid JSON
        {"agent_id": "C3", "last_name": "Nameless"},  # line 3: first_name missing
        OTHER_CHARACTER,
        {"agent_id": "C4", "first_name": "Old", "age": "very"},  # line 5: age not a number
    ])  # fmt: skip
    _write_jsonl(folder / "environment_profiles.jsonl", [
        {**GOOD_SCENARIO, "env_id": "E2", "relationship": "7"},  # line 1: no such level
        GOOD_SCENARIO,
        {**GOOD_SCENARIO, "env_id": "E3", "age_constraint": "[(18, 70)"},  # line 3: unreadable literal
        {k: v for k, v in GOOD_SCENARIO.items() if k != "scenario"} | {"env_id": "E4"},  # line 4
        {**GOOD_SCENARIO, "env_id": "E5", "agent_goals": ["Win", "Lose <strategy_hint>Be kind"]},  # line 5
    ])  # fmt: skip
    _write_jsonl(folder / "relationship_profiles.jsonl", [
        {"relationship_id": "R1", "agent1_id": "C1", "agent2_id": "C2", "relationship": "2", "background_story": "Neighbours."},
        {"relationship_id": "R2", "agent1_id": "C1", "agent2_id": "C404", "relationship": "1"},  # line 2
        {"relationship_id": "R3", "agent1_id": "C1", "agent2_id": "C2", "relationship": "best friends"},  # line 3
    ])  # fmt: skip
    _write_jsonl(folder / "env_agent_combo_storages.jsonl", [
        {"combo_id": "P1", "env_id": "E1", "agent_ids": ["C1", "C2"]},
        {"combo_id": "P2", "env_id": "E404", "agent_ids": ["C1", "C2"]},  # line 2
        {"combo_id": "P3", "env_id": "E1", "agent_ids": ["C1", "C3"]},  # line 3: C3 was skipped
        {"combo_id": "P1", "env_id": "E1", "agent_ids": ["C2", "C1"]},  # line 4: duplicate id
        "",
        {"combo_id": "P4", "env_id": "E1", "agent_ids": ["C2", "C1"]},  # line 6, after a blank line
    ])  # fmt: skip
    return folder


def test_malformed_lines_are_reported_and_the_rest_imports(store: Store, malformed_dir: Path):
    report = import_sotopia(store, malformed_dir)
    where = {(e.file, e.line, e.field) for e in report.errors}
    assert where == {
        ("agent_profiles.jsonl", 2, None),
        ("agent_profiles.jsonl", 3, "first_name"),
        ("agent_profiles.jsonl", 5, "age"),
        ("environment_profiles.jsonl", 1, "relationship"),
        ("environment_profiles.jsonl", 3, "age_constraint"),
        ("environment_profiles.jsonl", 4, "scenario"),
        ("environment_profiles.jsonl", 5, "agent_goals[1]"),
        ("relationship_profiles.jsonl", 2, "agent2_id"),
        ("relationship_profiles.jsonl", 3, "relationship"),
        ("env_agent_combo_storages.jsonl", 2, "env_id"),
        ("env_agent_combo_storages.jsonl", 3, "agent_ids[1]"),
        ("env_agent_combo_storages.jsonl", 4, "combo_id"),
    }
    messages = {(e.file, e.line): e.message for e in report.errors}
    assert "invalid JSON at column 42" in messages[("agent_profiles.jsonl", 2)]
    assert "5 (family_member); got '7'" in messages[("environment_profiles.jsonl", 1)]
    assert "'C404'" in messages[("relationship_profiles.jsonl", 2)]
    assert "line 1" in messages[("env_agent_combo_storages.jsonl", 4)]
    assert "<strategy_hint>" in messages[("environment_profiles.jsonl", 5)]

    assert (report.characters, report.scenarios, report.relationships, report.pairings) == (2, 1, 1, 2)
    assert sorted(c.id for c in store.characters()) == ["C1", "C2"]
    assert store.character("C1").moral_values == ["Care", "Liberty"]
    assert [s.id for s in store.scenarios()] == ["E1"]
    assert [p.agent_ids for p in store.pairings()] == [["C1", "C2"], ["C2", "C1"]]


def test_a_missing_file_is_an_error_but_the_others_import(store: Store, sotopia_dir: Path, tmp_path: Path):
    folder = tmp_path / "partial"
    folder.mkdir()
    for name in FILE_NAMES:
        if name != "relationship_profiles.jsonl":
            shutil.copy(sotopia_dir / name, folder / name)
    report = import_sotopia(store, folder)
    assert [(e.file, e.line, e.field) for e in report.errors] == [("relationship_profiles.jsonl", None, None)]
    assert "not found" in report.errors[0].message
    assert (report.characters, report.scenarios, report.relationships, report.pairings) == (40, 90, 0, 450)


def test_references_may_point_at_records_already_in_the_store(store: Store, malformed_dir: Path, tmp_path: Path):
    import_sotopia(store, malformed_dir)
    later = tmp_path / "later"
    later.mkdir()
    _write_jsonl(later / "env_agent_combo_storages.jsonl", [{"combo_id": "P9", "env_id": "E1", "agent_ids": ["C2", "C1"]}])
    report = import_sotopia(store, later)
    assert report.pairings == 1
    assert {e.file for e in report.errors} == {n for n in FILE_NAMES if n != "env_agent_combo_storages.jsonl"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("nan", None),
        ("none", None),
        (None, None),
        ("[actor, actor]", [["actor"], ["actor"]]),
        ("[[actor, stunt double], director]", [["actor", "stunt double"], ["director"]]),
        ("[['actor'], ['director', 'writer']]", [["actor"], ["director", "writer"]]),
        (["actor", ["director"]], [["actor"], ["director"]]),
    ],
)
def test_occupation_constraint_forms(raw, expected):
    assert parse_occupation_constraint(raw) == expected


@pytest.mark.parametrize("raw", ["[actor]", "actor", "[actor, actor, actor]", [1, 2]])
def test_bad_occupation_constraints_name_the_field(raw):
    with pytest.raises(FieldProblem) as caught:
        parse_occupation_constraint(raw)
    assert caught.value.field == "occupation_constraint"


def test_age_and_agent_constraint_forms():
    assert parse_age_constraint("[(21, 70), (21, 70)]") == [(21, 70), (21, 70)]
    assert parse_age_constraint([[20, 30], [40, 50]]) == [(20, 30), (40, 50)]
    assert parse_age_constraint("nan") is None
    with pytest.raises(FieldProblem):
        parse_age_constraint("[18, 70]")
    assert parse_agent_constraint("none") is None
    assert parse_agent_constraint([["A1", "A2"], []]) == [["A1", "A2"], []]


def test_stringified_lists_inside_lists_are_flattened():
    character = character_from_sotopia(
        {"agent_id": "X", "first_name": "Ada", "moral_values": ["['Liberty']", " Care"],
         "schwartz_personal_values": "Power, Achievement"}  # fmt: skip
    )
    assert character.moral_values == ["Liberty", "Care"]
    assert character.schwartz_personal_values == ["Power", "Achievement"]


def test_hint_tags_must_nest():
    check_hint_tags("a (<extra_info>x <clarification_hint>y</clarification_hint></extra_info>)", "g")
    for bad in ("<extra_info>x", "x</strategy_hint>", "<extra_info><strategy_hint>x</extra_info></strategy_hint>"):
        with pytest.raises(FieldProblem):
            check_hint_tags(bad, "g")


# -- the command line -----------------------------------------------------------------------


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), prog_name="sotopia-pi")


def test_cli_import_json(sotopia_dir: Path):
    result = _cli("import-sotopia", str(sotopia_dir), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document == {"characters": 40, "scenarios": 90, "relationships": 120, "pairings": 450, "errors": []}
    with Store() as store:  # the command wrote to the store SOTOPIA_PI_HOME points at
        assert store.counts()["pairings"] == 450


def test_cli_import_exits_non_zero_on_errors(malformed_dir: Path):
    result = _cli("import-sotopia", str(malformed_dir), "--json")
    assert result.exit_code != 0
    document = json.loads(result.stdout)
    assert set(document) == {"characters", "scenarios", "relationships", "pairings", "errors"}
    assert document["characters"] == 2 and len(document["errors"]) == 12
    assert set(document["errors"][0]) == {"file", "line", "field", "message"}
    plain = _cli("import-sotopia", str(malformed_dir))
    assert plain.exit_code != 0
    assert "environment_profiles.jsonl:3 [age_constraint]" in plain.stderr


def test_cli_export_and_listings(sotopia_dir: Path, tmp_path: Path):
    assert _cli("import-sotopia", str(sotopia_dir)).exit_code == 0
    exported = _cli("export-sotopia", str(tmp_path / "out"), "--json")
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["pairings"] == 450
    assert _lines(tmp_path / "out" / "agent_profiles.jsonl") == _lines(sotopia_dir / "agent_profiles.jsonl")

    hard = json.loads(_cli("scenarios", "list", "--hard", "--json").stdout)
    assert {s["id"] for s in hard} == set(SOTOPIA_HARD_SCENARIO_IDS)
    assert all(s["sotopia_hard"] for s in hard)
    found = json.loads(_cli("scenarios", "list", "--search", "galaxy s8", "--json").stdout)
    assert [s["id"] for s in found] == [GALAXY_SALE]
    library = load_library()  # listings open the store with the built-in library installed
    assert len(json.loads(_cli("scenarios", "list", "--json").stdout)) == 90 + len(library.scenarios)
    assert len(json.loads(_cli("characters", "list", "--json").stdout)) == 40 + len(library.characters)
    assert "Amara Hartley" in _cli("characters", "list").stdout

    shown = json.loads(_cli("scenarios", "show", "movie_scene", "--json").stdout)
    assert shown["scenario"]["id"] == MOVIE_SCENE and len(shown["pairings"]) == 5
    assert _cli("scenarios", "show", "no_such_scenario").exit_code != 0
