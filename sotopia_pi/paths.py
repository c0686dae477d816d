"""Where sotopia-pi keeps its files.

Everything lives under the user's data directory (platformdirs) unless SOTOPIA_PI_HOME is set,
in which case data, config and downloaded models all live under that one folder; tests and
scripts rely on that to stay out of the user's real store.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from .errors import SotopiaError

APP_NAME = "sotopia-pi"
HOME_ENV = "SOTOPIA_PI_HOME"

REPO_ROOT = Path(__file__).resolve().parent.parent


class PathsError(SotopiaError, RuntimeError):
    """A folder sotopia-pi needs cannot be created or used."""


def ensure_dir(path: Path, what: str = "folder") -> Path:
    """Create `path` if needed; PathsError in one clear sentence when that is impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise PathsError(f"the {what} {path} is a file, not a folder; move it away or set {HOME_ENV}") from None
    except NotADirectoryError:
        blocker = next((parent for parent in path.parents if parent.is_file()), path)
        raise PathsError(
            f"cannot create the {what} {path}: {blocker} is a file, not a folder; move it away or set {HOME_ENV}"
        ) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise PathsError(f"cannot create the {what} {path}: {reason}; set {HOME_ENV} to a folder you can write") from None
    if not path.is_dir():
        raise PathsError(f"the {what} {path} is not a folder; move it away or set {HOME_ENV}")
    return path


def home() -> Path:
    override = os.environ.get(HOME_ENV)
    path = Path(override).expanduser() if override else platformdirs.user_data_path(APP_NAME)
    return ensure_dir(path, "data folder")


def config_dir() -> Path:
    override = os.environ.get(HOME_ENV)
    path = Path(override).expanduser() / "config" if override else platformdirs.user_config_path(APP_NAME)
    return ensure_dir(path, "config folder")


def database_path() -> Path:
    return home() / "sotopia-pi.sqlite3"


def models_dir() -> Path:
    return ensure_dir(home() / "models", "models folder")


def adapters_dir() -> Path:
    return ensure_dir(home() / "adapters", "adapters folder")


def library_dir() -> Path:
    """The built-in scenario library shipped with the project."""
    return REPO_ROOT / "scenarios"


def catalog_path() -> Path:
    return REPO_ROOT / "models" / "catalog.toml"
