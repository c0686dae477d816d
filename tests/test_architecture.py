"""The architecture's import rules (.importlinter) hold, and the check really catches a breach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO / ".importlinter"), "--no-cache"],
        cwd=pythonpath, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_import_contracts_hold():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_engine_module_importing_textual_breaks_the_contract(tmp_path):
    for package in ("sotopia_pi", "tui"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "sotopia_pi" / "sneaky.py").write_text("from textual.widgets import Static\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "sotopia_pi.sneaky -> textual" in result.stdout
