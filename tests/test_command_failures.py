"""Every command fails with one clear line and a non-zero exit, never a traceback, when the
home folder, the database or the disk is unusable."""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from sotopia_pi.cli import main
from sotopia_pi.dataset import export as export_module
from sotopia_pi.store import SCHEMA_VERSION, Store

from .factories import seed_store

COMMANDS = [
    ["episodes", "list"],
    ["scenarios", "list"],
    ["characters", "list"],
    ["curate", "select"],
    ["adapters", "list"],
    ["resume", "01ABC"],
    ["judge", "01ABC"],
    ["run", "--scenario", "adopt_rescue_dog", "--agent1", "replay:x", "--agent2", "replay:y"],
    ["export", "s1", "--format", "chat", "--out", "out.jsonl"],
    ["export-sotopia", "exported"],
]


def run_main(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
        sys.exit(0)
    captured = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), captured.err


def assert_one_clear_line(code: int, err: str, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def home(isolated_home: Path, monkeypatch) -> Path:
    monkeypatch.chdir(isolated_home.parent)
    return isolated_home


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_home_that_is_a_file(home: Path, monkeypatch, capsys, args):
    file_home = home.parent / "home-file"
    file_home.write_text("not a folder")
    monkeypatch.setenv("SOTOPIA_PI_HOME", str(file_home))
    assert_one_clear_line(*run_main(args, capsys), str(file_home), "is a file")


def test_a_home_that_cannot_be_created(home: Path, monkeypatch, capsys):
    blocker = home.parent / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("SOTOPIA_PI_HOME", str(blocker / "sub"))
    assert_one_clear_line(*run_main(["episodes", "list"], capsys), "cannot create the data folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_a_read_only_home(home: Path, capsys):
    Store().close()
    home.chmod(0o500)
    try:
        assert_one_clear_line(*run_main(["run", "--scenario", "x"], capsys))
    finally:
        home.chmod(0o700)


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_garbage_database(home: Path, capsys, args):
    (home / "sotopia-pi.sqlite3").write_bytes(os.urandom(4096))
    assert_one_clear_line(*run_main(args, capsys), "is not a usable sotopia-pi database")


def test_a_truncated_database(home: Path, capsys):
    with Store() as store:
        store._conn.execute("CREATE TABLE filler (x TEXT)")
        store._conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,)] * 400)
        store._conn.commit()
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    database = home / "sotopia-pi.sqlite3"
    database.write_bytes(database.read_bytes()[: 60_000])
    for suffix in ("-wal", "-shm"):
        Path(str(database) + suffix).unlink(missing_ok=True)
    code, err = run_main(["episodes", "list"], capsys)
    assert_one_clear_line(code, err, str(database))


def test_a_newer_schema_is_refused_with_the_version_it_needs(home: Path, capsys):
    connection = sqlite3.connect(home / "sotopia-pi.sqlite3")
    connection.execute(f"PRAGMA user_version={SCHEMA_VERSION + 7}")
    connection.commit()
    connection.close()
    assert_one_clear_line(
        *run_main(["episodes", "list"], capsys), f"schema version {SCHEMA_VERSION + 7}", "upgrade sotopia-pi"
    )


def test_export_onto_a_full_disk(home: Path, capsys, monkeypatch):
    with Store() as store:
        seed_store(store)
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        writelines = write

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def full_disk(fd, *args, **kwargs):
        return FullDisk(real_fdopen(fd, *args, **kwargs))

    monkeypatch.setattr(export_module.os, "fdopen", full_disk)  # the same os module everywhere
    with pytest.raises(OSError):
        export_module.write_jsonl([{"a": 1}], home / "out.jsonl")
    assert not list(home.glob(".out.jsonl.*"))  # no half-written temporary file is left
    code, err = run_main(["export-sotopia", str(home / "exported")], capsys)
    assert_one_clear_line(code, err, "No space left on device")
    unwritable = home / "a-file"
    unwritable.write_text("")
    monkeypatch.setattr(export_module.os, "fdopen", real_fdopen)
    assert_one_clear_line(*run_main(["export-sotopia", str(unwritable / "dir")], capsys))


def test_export_to_a_device_writes_into_it_and_never_replaces_it(home: Path, tmp_path: Path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert export_module.write_jsonl([{"a": 1}], fifo) == 1
        assert os.read(reader, 100) == b'{"a": 1}\n'
    finally:
        os.close(reader)
    assert not fifo.is_file()
