"""User settings: model presets, default models, the judge, live evaluation, max turns.

Stored as TOML in `paths.config_dir() / "config.toml"`; any field can be overridden by an
environment variable named SOTOPIA_PI_<FIELD> (e.g. SOTOPIA_PI_MAX_TURNS=8, or
SOTOPIA_PI_PRESETS as a JSON list). Environment variables win over the file, the file wins
over the defaults. The defaults need no configuration and no network: the embedded model
plays both sides and judges.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from . import paths
from .backends.base import parse_model_name
from .errors import SotopiaError

ENV_PREFIX = "SOTOPIA_PI_"
CONFIG_FILE_NAME = "config.toml"
EMBEDDED = "embedded"


class ConfigError(SotopiaError, ValueError):
    """The config file cannot be read or holds a bad value; the message names file and field."""


def _checked_model_name(name: str, allow_empty: bool = False) -> str:
    name = name.strip()
    if not name and allow_empty:
        return ""
    parse_model_name(name)  # raises ModelNameError, a ValueError, with a clear message
    return name


class ModelPreset(BaseModel):
    """A named model the user can pick: the embedded one, a GGUF file, or an API endpoint."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    model: str

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return _checked_model_name(value)


def default_presets() -> list[ModelPreset]:
    return [ModelPreset(name="SmolLM2-135M (embedded)", model=EMBEDDED)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_assignment=True,
    )

    agent1_model: str = EMBEDDED
    agent2_model: str = EMBEDDED
    judge_model: str = Field(default=EMBEDDED, description='"" runs episodes without a judge')
    live_eval: bool = True
    max_turns: int = Field(default=20, ge=1, le=200)
    presets: list[ModelPreset] = Field(default_factory=default_presets)

    @field_validator("agent1_model", "agent2_model")
    @classmethod
    def _agent_model(cls, value: str) -> str:
        return _checked_model_name(value)

    @field_validator("judge_model")
    @classmethod
    def _judge_model(cls, value: str) -> str:
        name = _checked_model_name(value, allow_empty=True)
        if name and parse_model_name(name).is_human:
            raise ValueError("a person cannot be the judge; pick a model or leave it empty")
        return name

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `load` passes the file's values as init values; the environment must beat them.
        return env_settings, init_settings

    @property
    def agent_models(self) -> tuple[str, str]:
        return self.agent1_model, self.agent2_model

    @property
    def generation_model(self) -> str:
        """The model that writes new scenarios unless told otherwise: the judge (the stronger
        reader of the two roles), or the embedded model when episodes run unjudged."""
        return self.judge_model or EMBEDDED

    def model_choices(self) -> list[ModelPreset]:
        """The presets, with the embedded model always among them (it is the offline fallback)."""
        choices = list(self.presets)
        if not any(p.model == EMBEDDED for p in choices):
            choices.insert(0, default_presets()[0])
        return choices


def config_path() -> Path:
    return paths.config_dir() / CONFIG_FILE_NAME


def env_overrides() -> dict[str, str]:
    """Fields currently set by environment variables, with the variable's name."""
    found = {}
    for field in Settings.model_fields:
        variable = f"{ENV_PREFIX}{field.upper()}"
        if variable in os.environ:
            found[field] = variable
    return found


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(piece) for piece in item["loc"]) or "(file)"
        parts.append(f"field {location}: {item['msg']}")
    return "; ".join(parts)


def read_file(path: Path | None = None) -> dict[str, Any]:
    """The config file's raw values ({} if there is none yet)."""
    path = path or config_path()
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from error
    except (ValueError, RecursionError) as error:  # an integer too long to convert, nesting too deep
        raise ConfigError(f"{path}: cannot read: {type(error).__name__}: {str(error)[:160]}") from None


def load(path: Path | None = None) -> Settings:
    """Settings from defaults, then the config file, then SOTOPIA_PI_* environment variables."""
    path = path or config_path()
    values = read_file(path)
    try:
        return Settings(**values)
    except ValidationError as error:
        raise ConfigError(f"{path} (or a {ENV_PREFIX}* variable): {_describe(error)}") from error
    except (SettingsError, RecursionError) as error:  # an environment variable that is not the JSON it must be
        raise ConfigError(f"{_env_problem(error)}; the defaults are used for it") from None


def _env_problem(error: Exception) -> str:
    """Which SOTOPIA_PI_* variable could not be read, in one sentence."""
    text = str(error) if isinstance(error, SettingsError) else f"{type(error).__name__} while reading it"
    for field, variable in env_overrides().items():
        if f'"{field}"' in text or not isinstance(error, SettingsError):
            return f"{variable} is not valid (it must be JSON for this field): {os.environ[variable][:80]!r}"
    return text


def load_or_default(path: Path | None = None) -> tuple[Settings, str | None]:
    """Settings and, when the file is bad, the error to show (defaults are used instead;
    the file is left untouched so nothing the user wrote is lost)."""
    try:
        return load(path), None
    except ConfigError as error:
        try:
            return Settings(), str(error)
        except (ValidationError, SettingsError, RecursionError):  # a bad variable: ignore the environment too
            return Settings.model_construct(), str(error)


def save(settings: Settings, path: Path | None = None) -> Path:
    """Write what the user chose as TOML, atomically (a crash mid-write keeps the old file).

    Only choices are written: a field equal to its default is left out (so a later change of
    default reaches the user), and a field whose value came from a SOTOPIA_PI_* variable keeps
    whatever the file had (the variable is for this session, not for the file)."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    document = _chosen_values(settings, _saved_values(path))
    temporary = path.with_suffix(".toml.tmp")
    temporary.write_text(tomli_w.dumps(document), encoding="utf-8")
    os.replace(temporary, path)
    return path


def _saved_values(path: Path) -> dict[str, Any]:
    """The known fields the file holds now ({} when it is missing or unreadable: saving
    replaces an unreadable file, as the user asked)."""
    try:
        values = read_file(path)
    except ConfigError:
        return {}
    return {field: value for field, value in values.items() if field in Settings.model_fields}


def _chosen_values(settings: Settings, saved: dict[str, Any]) -> dict[str, Any]:
    current = settings.model_dump(mode="json")
    defaults = Settings.model_construct().model_dump(mode="json")
    from_environment = _environment_values()
    document = dict(saved)
    for field, value in current.items():
        if field in from_environment and value == from_environment[field]:
            continue
        if value == defaults[field]:
            document.pop(field, None)
        else:
            document[field] = value
    return document


def _environment_values() -> dict[str, Any]:
    """The fields SOTOPIA_PI_* variables set, as the settings would read them."""
    overridden = env_overrides()
    if not overridden:
        return {}
    try:
        from_environment = Settings().model_dump(mode="json")
    except (ValidationError, SettingsError, RecursionError):  # a bad variable sets nothing
        return {}
    return {field: from_environment[field] for field in overridden}
