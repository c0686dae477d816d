"""ruff and mypy pass (their settings are pyproject.toml's), so the test command enforces them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUFF_PATHS = ("sotopia_pi", "tui", "tests", "bench", "scripts")
INSTALL_HINT = "install the dev tools: .venv/bin/pip install -e '.[dev]' (scripts/setup.sh does)"


def _run_tool(module: str, *args: str) -> subprocess.CompletedProcess:
    assert importlib.util.find_spec(module) is not None, f"{module} is not installed; {INSTALL_HINT}"
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=800
    )


def test_ruff_finds_nothing_to_fix():
    result = _run_tool("ruff", "check", "--no-cache", *RUFF_PATHS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_passes_on_the_engine():
    result = _run_tool("mypy")  # the files and options come from [tool.mypy]
    assert result.returncode == 0, result.stdout + result.stderr
