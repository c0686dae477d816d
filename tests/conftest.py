"""Shared fixtures. Every test gets its own SOTOPIA_PI_HOME so nothing touches the user's store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sotopia_pi.store import Store

pytest_plugins = ("pytester",)

REPO_ROOT = Path(__file__).resolve().parent.parent
SOTOPIA_DATA_ENV = "SOTOPIA_PI_SOTOPIA_DATA"
BESIDE_THE_CLONE = REPO_ROOT.parent / "shared" / "sotopia"
SOTOPIA_MARKER = "agent_profiles.jsonl"


def pytest_configure(config: pytest.Config) -> None:
    """README's test command sets no variable: a clone beside ../shared finds the data there
    (.ci/run sets the same path explicitly)."""
    if not os.environ.get(SOTOPIA_DATA_ENV) and BESIDE_THE_CLONE.is_dir():
        os.environ[SOTOPIA_DATA_ENV] = str(BESIDE_THE_CLONE)


@pytest.fixture(scope="session", autouse=True)
def shared_merge_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of merged models for the whole run: merging the shipped adapter into the base
    takes seconds, and every test's home is new."""
    folder = tmp_path_factory.mktemp("merged-models")
    os.environ["SOTOPIA_PI_MERGE_CACHE"] = str(folder)
    return folder


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


@pytest.fixture(scope="session")
def sotopia_dir() -> Path:
    """SOTOPIA's released JSONL files. A test that needs them fails (never skips) without them."""
    value = os.environ.get(SOTOPIA_DATA_ENV, "")
    how = (
        f"set {SOTOPIA_DATA_ENV} to the folder holding SOTOPIA's JSONL files ({SOTOPIA_MARKER}, "
        f"environment_profiles.jsonl, ...), or clone this repository beside ../shared/sotopia"
    )
    if not value:
        pytest.fail(f"{SOTOPIA_DATA_ENV} is not set and {BESIDE_THE_CLONE} does not exist: {how}", pytrace=False)
    folder = Path(value).expanduser().resolve()
    if not (folder / SOTOPIA_MARKER).is_file():
        pytest.fail(f"{SOTOPIA_DATA_ENV}={value}: no {SOTOPIA_MARKER} there: {how}", pytrace=False)
    return folder


@pytest.fixture
def replay(tmp_path: Path):
    """`replay(name, outputs)` writes a replay file of canned answers and returns its model name."""
    from .helpers import replay_model  # here, not at the top: test_data_path copies this file alone

    def write(name: str, outputs: list[str]) -> str:
        return replay_model(tmp_path / f"{name}.json", outputs)

    return write
