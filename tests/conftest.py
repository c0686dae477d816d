"""Shared fixtures. Every test gets its own SOTOPIA_PI_HOME so nothing touches the user's store."""

from __future__ import annotations

from pathlib import Path

import pytest

from sotopia_pi.store import Store

REPO_ROOT = Path(__file__).resolve().parent.parent
SOTOPIA_DATA = REPO_ROOT.parent / "shared" / "sotopia"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SOTOPIA_PI_HOME", str(home))
    return home


@pytest.fixture
def store(isolated_home: Path):
    with Store() as opened:
        yield opened


@pytest.fixture
def sotopia_dir() -> Path:
    if not SOTOPIA_DATA.is_dir():
        pytest.skip(f"SOTOPIA data not found at {SOTOPIA_DATA}")
    return SOTOPIA_DATA
