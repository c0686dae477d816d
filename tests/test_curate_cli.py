"""`sotopia-pi curate ...` and `sotopia-pi export ...` headless, on a store of known episodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sotopia_pi.store import Store

from .curation_helpers import (
    DEFAULT_ACTIONS,
    add_episode,
    examples_per_side,
    seed_profiles,
)
from .helpers import cli


@pytest.fixture
def episodes(store: Store) -> dict:
    seed_profiles(store)
    made = {
        "a": add_episode(store, (9, 2), minutes=0),
        "b": add_episode(store, (5, 8), minutes=1),
        "c": add_episode(store, (7, 7), scenario_id="bike-swap", minutes=2),
    }
    store.close()  # the commands open the store themselves, as they do for a user
    return made


def test_select_reports_the_selection_as_json(episodes: dict):
    result = cli("curate", "select", "-f", "best-side", "-f", "cutoff:goal>=8", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["candidates"] == 6
    assert {(k["episode_id"], k["side"]) for k in document["kept"]} == {(episodes["a"].id, 0), (episodes["b"].id, 1)}
    assert [(s["before"], s["after"]) for s in document["selection"]["steps"]] == [(6, 4), (4, 2)]
    side0, side1 = examples_per_side()
    assert document["stats"]["total"]["examples"] == side0 + side1


def test_decisions_edits_and_tags_from_the_command_line(episodes: dict):
    a, b = episodes["a"].id, episodes["b"].id
    assert cli("curate", "reject", a, "--side", "0", "--note", "too pushy").exit_code == 0
    assert cli("curate", "tag", b, "gold").exit_code == 0
    edited = cli("curate", "edit", b, "1", "Fine, two forty.", "--json")
    assert edited.exit_code == 0, edited.output
    assert json.loads(edited.stdout)["original"] == DEFAULT_ACTIONS[1][1]
    result = cli("curate", "select", "-f", "tag:gold", "--json")
    assert {(k["episode_id"], k["side"]) for k in json.loads(result.stdout)["kept"]} == {(b, 0), (b, 1)}
    result = cli("curate", "select", "-f", "best-side", "--json")
    kept = {(k["episode_id"], k["side"]) for k in json.loads(result.stdout)["kept"]}
    assert (a, 0) not in kept and (b, 0) in kept
    history = json.loads(cli("curate", "edits", b, "--json").stdout)
    assert [(h["index"], h["edited"]) for h in history] == [(1, "Fine, two forty.")]
    with Store() as store:
        assert store.turns(b)[1].edited_argument == "Fine, two forty."


def test_snapshot_then_export_every_format(episodes: dict, tmp_path: Path):
    made = cli("curate", "select", "-f", "best-side", "--snapshot", "r1", "--json")
    assert made.exit_code == 0, made.output
    manifest = json.loads(made.stdout)["snapshot"]
    listed = json.loads(cli("curate", "snapshots", "--json").stdout)
    assert [m["name"] for m in listed] == ["r1"]
    again = cli("curate", "select", "--snapshot", "r1")
    assert again.exit_code == 1 and "already exists" in again.stderr
    for fmt in ("sft", "chat", "prompt-completion", "episodelog"):
        out = tmp_path / f"{fmt}.jsonl"
        result = cli("export", "r1", "--format", fmt, "--out", str(out), "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        lines = out.read_text(encoding="utf-8").splitlines()
        expected = manifest["counts"]["episodes"] if fmt == "episodelog" else manifest["counts"]["total"]["examples"]
        assert report["rows"] == len(lines) == expected


def test_clear_errors(episodes: dict, tmp_path: Path):
    missing = cli("export", "nope", "--format", "chat", "--out", str(tmp_path / "x.jsonl"))
    assert missing.exit_code == 1 and "no snapshot named 'nope'" in missing.stderr
    assert not (tmp_path / "x.jsonl").exists()
    bad_filter = cli("curate", "select", "-f", "cutoff:goal>7")
    assert bad_filter.exit_code == 1 and "cutoff:DIM>=N" in bad_filter.stderr
    bad_turn = cli("curate", "edit", episodes["a"].id, "3", "words")
    assert bad_turn.exit_code == 1 and "'none' action" in bad_turn.stderr
    neither = cli("curate", "edit", episodes["a"].id, "0")
    assert neither.exit_code == 1 and "--undo" in neither.stderr
