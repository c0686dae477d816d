"""Helpers every kind of test uses: waiting for a condition, running the CLI in-process or as
a child process, replay model files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner, Result

CLI_PROCESS = [sys.executable, "-c", "from sotopia_pi.cli import main; main()"]


async def wait_until(pilot, predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """Let a Textual app run until `predicate()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await pilot.pause(0.02)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `predicate()` from a plain thread (a child process, a runner thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def cli(*args: str, input: str | None = None) -> Result:
    """`sotopia-pi ARGS` in this process (stdout and stderr kept apart)."""
    from sotopia_pi.cli import app

    return CliRunner().invoke(app, list(args), input=input)


def cli_process(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """`sotopia-pi ARGS` as a child process with this test's environment (its SOTOPIA_PI_HOME)."""
    result = subprocess.run(
        [*CLI_PROCESS, *args], check=False, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr[-2000:]}")
    return result


def replay_model(path: Path, outputs: list[str]) -> str:
    """Write a replay file of canned answers and return its model name."""
    path.write_text(json.dumps(outputs), encoding="utf-8")
    return f"replay:{path}"
