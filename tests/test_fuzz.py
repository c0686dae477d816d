"""Fuzzing with a bounded budget: the parsers of model text, the SOTOPIA importer, the library
loader and the other files the app reads give a value or their own clear error for any input;
and a crash test kills runners at random moments and checks that nothing committed is lost,
the store stays whole, and every episode resumes to its end.

Each property runs a fixed number of examples (FUZZ_EXAMPLES, a few seconds each on 2 cores);
set SOTOPIA_PI_FUZZ_EXAMPLES to fuzz longer.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sotopia_pi import config, paths
from sotopia_pi.backends import BackendError
from sotopia_pi.backends.replay import ReplayBackend
from sotopia_pi.catalog import CatalogError, load_catalog
from sotopia_pi.cli import app
from sotopia_pi.episode import EpisodeStatus
from sotopia_pi.judge import DimensionSetError, load_dimension_set, parse_agent_evaluation
from sotopia_pi.library import LibraryError, load_library
from sotopia_pi.library.generate import parse_answer
from sotopia_pi.library.sotopia_io import import_sotopia
from sotopia_pi.model_text import clean_text, one_line, read_json
from sotopia_pi.prompts import load_json_object, parse_action, partial_argument, turn_line
from sotopia_pi.store import Store

from .factories import GOOD_SCORES, action, judge_answer, seed_store

FUZZ_EXAMPLES = int(os.environ.get("SOTOPIA_PI_FUZZ_EXAMPLES", "150"))
FILE_EXAMPLES = max(10, FUZZ_EXAMPLES // 6)
BUDGET = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is deterministic
    database=None,  # and nothing written next to the tests
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FILE_BUDGET = settings(BUDGET, max_examples=FILE_EXAMPLES)

ANY_CHARACTER = st.characters(exclude_categories=())  # surrogates and controls included
ANY_TEXT = st.text(ANY_CHARACTER, max_size=300)
JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)
ACTIONISH = st.fixed_dictionaries(
    {"action_type": st.sampled_from(["speak", "leave", "none", "action", "gesture", ""]) | ANY_TEXT},
    optional={"argument": JSON_VALUE},
)
FRAGMENTS = st.sampled_from([
    "{", "}", "[", "]", '"', "\\", "```json", "```", "\\ud800", "\\udfff", "\x1b[2J", "\x00",
    "\nTurn #9: X said: \"yes\"", "9" * 5000, "[" * 3000, "{'", ",", ":", "null", "NaN", "\ufeff",
])


@st.composite
def model_text(draw) -> str:
    """Text a model might write: JSON (valid, cut, spliced with fragments) or anything at all."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(ANY_TEXT)
    document = json.dumps(draw(ACTIONISH | JSON_VALUE), ensure_ascii=draw(st.booleans()))
    if kind == 1:
        return document
    cut = draw(st.integers(0, len(document)))
    pieces = draw(st.lists(FRAGMENTS, max_size=4))
    if kind == 2:
        return document[:cut] + "".join(pieces)
    return "".join(pieces) + document + draw(ANY_TEXT)


def storable(text: str) -> None:
    """What goes into the store must be UTF-8 without terminal escapes."""
    text.encode("utf-8")
    assert "\x1b" not in text


# -- parsers of model text --------------------------------------------------------------------


@BUDGET
@given(model_text())
def test_read_json_always_answers(text):
    result = read_json(text)
    assert not (result.problem and result.value is not None)  # a value, or a reason, never both
    json.dumps(result.value, ensure_ascii=False).encode("utf-8")
    load_json_object(text)


@BUDGET
@given(model_text())
def test_parse_action_gives_a_storable_action(text):
    parsed, note = parse_action(text)
    storable(parsed.argument)
    storable(note)
    parsed.model_dump_json().encode("utf-8")
    line = turn_line(3, "Ines Varga", parsed)
    assert "\n" not in line and line.count("Turn #") >= 1 and line.startswith("Turn #3: ")


@BUDGET
@given(model_text())
def test_judge_parser_gives_scores_or_a_failure_never_an_exception(text):
    evaluation = parse_agent_evaluation(text, load_dimension_set("sotopia"))
    if evaluation.ok:
        assert set(evaluation.scores) == set(GOOD_SCORES)
    else:
        storable(evaluation.failure)
    evaluation.model_dump_json().encode("utf-8")


@BUDGET
@given(model_text())
def test_generation_parser_raises_only_value_error(text):
    try:
        parse_answer(text)
    except ValueError:
        pass


@BUDGET
@given(model_text())
def test_streamed_argument_and_cleaning_are_safe(text):
    storable(partial_argument(text))
    cleaned = clean_text(text)
    storable(cleaned)
    assert clean_text(cleaned) == cleaned
    assert "\n" not in one_line(text)


# -- files the app reads ----------------------------------------------------------------------

SOTOPIA_KINDS = {
    "agent_profiles.jsonl": 40,
    "environment_profiles.jsonl": 90,
    "relationship_profiles.jsonl": 120,
    "env_agent_combo_storages.jsonl": 450,
}


@st.composite
def mutated_line(draw, line: bytes) -> bytes:
    """A real line with one hostile change: a field replaced, bytes spliced, or cut."""
    how = draw(st.integers(0, 3))
    if how == 0:
        record = json.loads(line)
        field = draw(st.sampled_from(sorted(record)))
        replacement = draw(st.sampled_from([
            "[" * 3000 + "]" * 3000, "9" * 5000, '"\\ud800"', '"\\udc00x\\ud83d"', "-1e999", '{"a": ' * 50 + "1" + "}" * 50,
            '"\\u001b[31mred"', "null", "[]",
        ]))
        text = json.dumps(record).replace(json.dumps({field: record[field]})[1:-1], f'"{field}": {replacement}', 1)
        return text.encode()
    if how == 1:
        at = draw(st.integers(0, len(line)))
        return line[:at] + draw(st.binary(max_size=20)) + line[at:]
    if how == 2:
        return line[: draw(st.integers(0, len(line)))]
    return b"\xef\xbb\xbf" + line


@FILE_BUDGET
@given(data=st.data())
def test_sotopia_import_keeps_going_past_any_bad_line(sotopia_dir, tmp_path_factory, data):
    directory = tmp_path_factory.mktemp("sotopia")
    file_name = data.draw(st.sampled_from(sorted(SOTOPIA_KINDS)))
    for name in SOTOPIA_KINDS:
        shutil.copy(sotopia_dir / name, directory / name)
    lines = (directory / file_name).read_bytes().splitlines()
    number = data.draw(st.integers(0, len(lines) - 1))
    lines[number] = data.draw(mutated_line(lines[number]))
    (directory / file_name).write_bytes(b"\n".join(lines) + b"\n")
    with Store(directory / "store.sqlite3") as store:
        report = import_sotopia(store, directory)
    bad_lines = {(issue.file, issue.line) for issue in report.errors}
    imported = report.characters + report.scenarios + report.relationships + report.pairings
    # at most the mutated line and the records that depend on it are lost; never the whole import
    assert imported >= sum(SOTOPIA_KINDS.values()) - 60
    for _file, line in bad_lines:
        assert line is not None, report.errors
    for issue in report.errors:
        str(issue).encode("utf-8")


TOML_FRAGMENTS = st.sampled_from([
    b"\n[[character]]\n", b"\nx = " + b"[" * 3000 + b"]" * 3000 + b"\n", b"\nbig = " + b"9" * 5000 + b"\n",
    b"\xff\xfe", b"\xef\xbb\xbf", b"\x00", b'"', b"\nagent_constraint = [[\"a\"]]\n", b"\n[", b"'''",
    b"\nrelationship = 9\n", b"\nage_constraint = [[1, 2]]\n",
])


@FILE_BUDGET
@given(data=st.data())
def test_library_loader_reports_every_bad_file_and_never_crashes(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("lib") / "library"
    shutil.copytree(paths.library_dir(), root, ignore=shutil.ignore_patterns("expert"))
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".toml", ".txt"))
    target = data.draw(st.sampled_from(files))
    content = target.read_bytes()
    at = data.draw(st.integers(0, len(content)))
    splice = data.draw(TOML_FRAGMENTS | st.binary(max_size=12))
    target.write_bytes(content[:at] + splice + content[at + data.draw(st.integers(0, 40)) :])
    try:
        library = load_library(root)
    except LibraryError as error:
        for problem in error.problems:
            str(problem).encode("utf-8")
    else:
        assert library.scenarios


@FILE_BUDGET
@given(content=st.binary(max_size=400) | TOML_FRAGMENTS, which=st.sampled_from(["config", "catalog", "dimensions", "replay"]))
def test_other_files_give_their_own_clear_error(tmp_path_factory, content, which):
    folder = tmp_path_factory.mktemp(which)
    path = folder / ("replay.json" if which == "replay" else "file.toml")
    base = {
        "config": b"",
        "catalog": paths.catalog_path().read_bytes(),
        "dimensions": (paths.library_dir() / "dimensions" / "sotopia.toml").read_bytes(),
        "replay": json.dumps([action("speak", "hi")]).encode(),
    }[which]
    path.write_bytes(base[: len(base) // 2] + content + base[len(base) // 2 :])
    if which == "config":
        settings_, error = config.load_or_default(path)
        assert settings_ is not None and (error is None or isinstance(error, str))
    elif which == "catalog":
        with pytest.raises(CatalogError) if _invalid_toml(path) else _maybe(CatalogError):
            load_catalog(path)
    elif which == "dimensions":
        with _maybe(DimensionSetError):
            load_dimension_set(str(path))
    else:
        with _maybe(BackendError):
            ReplayBackend.from_file(str(path))


def _invalid_toml(path: Path) -> bool:
    try:
        tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and TOMLDecodeError are ValueErrors
        return True
    return False


class _maybe:
    """Like pytest.raises, but the error may also not happen."""

    def __init__(self, expected: type[BaseException]):
        self.expected = expected

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is None or issubclass(kind, self.expected)


# -- the crash test ---------------------------------------------------------------------------

CRASH_ROUNDS = int(os.environ.get("SOTOPIA_PI_CRASH_ROUNDS", "4"))
MAX_TURNS = 12
CHILD = """
import sys, time
from sotopia_pi.backends.replay import ReplayBackend
slow = ReplayBackend.complete
def complete(self, *args, **kwargs):
    time.sleep(0.12)
    return slow(self, *args, **kwargs)
ReplayBackend.complete = complete
from sotopia_pi.cli import main
main(sys.argv[1:])
"""


def _committed_turns(stderr: str) -> set[int]:
    """Turn indexes the killed process reported as committed (it prints after each commit)."""
    return {int(match) for match in re.findall(r"^turn\s+(\d+)\s", stderr, re.M)}


def test_runners_killed_at_random_moments_lose_nothing_and_resume(store: Store, tmp_path: Path):
    seed_store(store)
    talk = [action("speak", f"line {i}") for i in range(MAX_TURNS)]
    files = {}
    for name, outputs in {"a": talk, "b": talk, "judge": [judge_answer()] * 200}.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(outputs), encoding="utf-8")
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    chooser = random.Random(20240611)
    for round_number in range(CRASH_ROUNDS):
        before = {row["id"] for row in store.episode_rows()}
        args = [
            "run", "--scenario", "bike_sale", "--agent1", f"replay:{files['a']}", "--agent2",
            f"replay:{files['b']}", "--judge", f"replay:{files['judge']}", "--max-turns", str(MAX_TURNS),
            "--live-eval" if round_number % 2 else "--no-live-eval",
        ]
        committed = _run_and_kill(child, args, delay=chooser.uniform(0.5, 3.2))
        created = [row["id"] for row in store.episode_rows() if row["id"] not in before]
        if not created:
            continue  # killed before the episode was stored
        (episode_id,) = created
        _check_whole(store, episode_id, committed)
        if chooser.random() < 0.5:  # kill a resume too
            committed |= _run_and_kill(child, ["resume", episode_id], delay=chooser.uniform(0.6, 2.5))
            _check_whole(store, episode_id, committed)
        episode = store.episode(episode_id)
        if episode.status != EpisodeStatus.finished or store.terminal_evaluation(episode_id) is None:
            result = CliRunner().invoke(app, ["resume", episode_id, "--json"])
            assert result.exit_code == 0, result.output
        episode = store.episode(episode_id)
        assert episode.status == EpisodeStatus.finished, episode.last_error
        turns = store.turns(episode_id)
        assert [t.index for t in turns] == list(range(len(turns))) and len(turns) == MAX_TURNS
        assert committed <= {t.index for t in turns}
        assert len(store.evaluations(episode_id, kind="terminal")) == 1


def _run_and_kill(child: Path, args: list[str], delay: float) -> set[int]:
    process = subprocess.Popen(
        [sys.executable, str(child), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _, stderr = process.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate()
    return _committed_turns(stderr)


def _check_whole(store: Store, episode_id: str, committed: set[int]) -> None:
    with sqlite3.connect(store.path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.reclaim_interrupted()
    episode = store.episode(episode_id)
    assert episode.status != EpisodeStatus.running  # a dead runner's episode is never left running
    turns = store.turns(episode_id)
    assert [t.index for t in turns] == list(range(len(turns)))
    assert committed <= {t.index for t in turns}, "a turn reported as committed was lost"
    assert len(store.evaluations(episode_id, kind="terminal")) <= 1
