"""Where sotopia-pi keeps its files.

Everything lives under the user's data directory (platformdirs) unless SOTOPIA_PI_HOME is set,
in which case data, config and downloaded models all live under that one folder; tests and
scripts rely on that to stay out of the user's real store.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "sotopia-pi"
HOME_ENV = "SOTOPIA_PI_HOME"

REPO_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    override = os.environ.get(HOME_ENV)
    path = Path(override).expanduser() if override else platformdirs.user_data_path(APP_NAME)
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_dir() -> Path:
    override = os.environ.get(HOME_ENV)
    path = Path(override).expanduser() / "config" if override else platformdirs.user_config_path(APP_NAME)
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_path() -> Path:
    return home() / "sotopia-pi.sqlite3"


def models_dir() -> Path:
    path = home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def adapters_dir() -> Path:
    path = home() / "adapters"
    path.mkdir(parents=True, exist_ok=True)
    return path


def library_dir() -> Path:
    """The built-in scenario library shipped with the project."""
    return REPO_ROOT / "scenarios"


def catalog_path() -> Path:
    return REPO_ROOT / "models" / "catalog.toml"
