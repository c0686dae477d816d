"""The SOTOPIA importer and the library loader keep going past any single bad line or file and
say where it is (file, line, field); the command exits non-zero with its JSON report printed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sotopia_pi import paths
from sotopia_pi.cli import app
from sotopia_pi.library import LibraryError, load_library
from sotopia_pi.library.sotopia_io import import_sotopia
from sotopia_pi.profiles import Scenario
from sotopia_pi.store import Store

BAD_LINES = {
    "deep nesting": '{"agent_id": "x", "first_name": ' + "[" * 50_000 + "]" * 50_000 + "}",
    "huge number": None,  # filled from a real record: age with 5000 digits
    "lone surrogate": None,  # filled from a real record: first_name "\ud800"
    "invalid UTF-8": b'{"agent_id": "\xff\xfe"}',
}


@pytest.fixture
def hostile_sotopia(sotopia_dir: Path, tmp_path: Path) -> tuple[Path, dict[str, int]]:
    """SOTOPIA's files with bad lines inserted among the characters; their line numbers."""
    directory = tmp_path / "sotopia"
    directory.mkdir()
    for name in ("environment_profiles.jsonl", "relationship_profiles.jsonl", "env_agent_combo_storages.jsonl"):
        shutil.copy(sotopia_dir / name, directory / name)
    lines = (sotopia_dir / "agent_profiles.jsonl").read_bytes().splitlines()
    record = json.loads(lines[0])
    huge = json.dumps({**record, "agent_id": "huge-age"}).replace('"age": 29', '"age": ' + "9" * 5000)
    surrogate = json.dumps({**record, "agent_id": "odd-name", "first_name": "\ud800"})
    assert '"\\ud800"' in surrogate
    bad = [
        BAD_LINES["deep nesting"].encode(),
        huge.encode(),
        surrogate.encode(),
        BAD_LINES["invalid UTF-8"],
    ]
    out = [b"\xef\xbb\xbf" + lines[0], *bad, *lines[1:]]  # a byte-order mark on line 1, too
    (directory / "agent_profiles.jsonl").write_bytes(b"\n".join(out) + b"\n")
    return directory, {"deep": 2, "huge": 3, "surrogate": 4, "utf8": 5}


def test_every_good_line_is_imported_and_every_bad_one_reported(store: Store, hostile_sotopia):
    directory, where = hostile_sotopia
    report = import_sotopia(store, directory)
    assert report.characters == 40  # including line 1 behind its byte-order mark
    assert report.scenarios == 90 and report.relationships == 120 and report.pairings == 450
    by_line = {issue.line: issue for issue in report.errors if issue.file == "agent_profiles.jsonl"}
    assert set(by_line) == set(where.values())
    assert "nested" in by_line[where["deep"]].message
    assert by_line[where["huge"]].field == "age"
    assert by_line[where["surrogate"]].field == "first_name"
    assert "not UTF-8" in by_line[where["utf8"]].message


def test_import_command_prints_its_json_report_and_exits_1(hostile_sotopia):
    directory, where = hostile_sotopia
    result = CliRunner().invoke(app, ["import-sotopia", str(directory), "--json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["characters"] == 40
    assert {issue["line"] for issue in document["errors"]} == set(where.values())


def write_library(tmp_path: Path) -> Path:
    root = tmp_path / "library"
    shutil.copytree(paths.library_dir(), root)
    return root


def problems_of(root: Path) -> list:
    with pytest.raises(LibraryError) as raised:
        load_library(root)
    return raised.value.problems


def test_library_with_bad_files_reports_each_and_reads_the_rest(tmp_path: Path):
    root = write_library(tmp_path)
    scenarios = sorted((root / "scenarios").glob("*.toml"))
    deep, huge, bad_bytes, constrained = scenarios[:4]
    deep.write_text(deep.read_text() + "\nextra = " + "[" * 5000 + "]" * 5000 + "\n")
    huge.write_text(huge.read_text() + "\nbig = " + "9" * 5000 + "\n")
    bad_bytes.write_bytes(bad_bytes.read_bytes() + b"\n# \xff\xfe\n")
    text = constrained.read_text()
    constrained.write_text(text + '\nagent_constraint = [["a"], ["b"], ["c"]]\n')
    seeds = root / "seed_prompts.txt"
    seeds.write_bytes(b"\xef\xbb\xbf" + seeds.read_bytes() + b"\n\xff broken seed\n")
    problems = problems_of(root)
    files = {problem.file for problem in problems}
    for path in (deep, huge, bad_bytes, constrained):
        assert f"library/scenarios/{path.name}" in files, files
    constraint = [p for p in problems if p.file.endswith(constrained.name)]
    assert any(p.field and "agent_constraint" in p.field for p in constraint), constraint
    seed_problems = [p for p in problems if p.file.endswith("seed_prompts.txt")]
    assert len(seed_problems) == 1 and seed_problems[0].line is not None
    assert "not UTF-8" in seed_problems[0].message


def test_a_byte_order_mark_costs_no_record(tmp_path: Path):
    root = write_library(tmp_path)
    for name in ("characters.toml", "relationships.toml"):
        path = root / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    library = load_library(root)
    assert len(library.characters) == len(load_library().characters)


def test_library_check_command_exits_non_zero_with_its_report(tmp_path: Path):
    root = write_library(tmp_path)
    first = sorted((root / "scenarios").glob("*.toml"))[0]
    first.write_bytes(first.read_bytes() + b"\n\xff\n")
    result = CliRunner().invoke(app, ["library", "check", "--path", str(root), "--json"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert any(first.name in problem and "not UTF-8" in problem for problem in document["errors"])


def test_constraints_must_name_two_agents():
    with pytest.raises(ValueError, match="one list per agent"):
        Scenario(scenario="s", agent_goals=["a", "b"], occupation_constraint=[["cook"]])
