"""Every exception class the engine defines shares one base, `SotopiaError`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import sotopia_pi
from sotopia_pi.cli.failures import describe_failure
from sotopia_pi.errors import SotopiaError


def engine_modules() -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(sotopia_pi.__path__, "sotopia_pi."))


def exception_classes() -> list[type[BaseException]]:
    found = []
    for name in engine_modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name:
                found.append(value)
    return found


def test_the_walk_finds_the_engines_exceptions():
    names = {cls.__name__ for cls in exception_classes()}
    assert {"StoreError", "BackendError", "ConfigError", "EpisodeError", "CatalogError"} <= names
    assert len(names) >= 30


def test_every_engine_exception_is_a_sotopia_error():
    strays = [f"{cls.__module__}.{cls.__qualname__}" for cls in exception_classes() if not issubclass(cls, SotopiaError)]
    assert strays == [], f"these engine exceptions do not subclass SotopiaError: {strays}"


@pytest.mark.parametrize(
    ("module", "name", "kept_base"),
    [
        ("sotopia_pi.config", "ConfigError", ValueError),
        ("sotopia_pi.backends.base", "ModelNameError", ValueError),
        ("sotopia_pi.store", "StoreError", RuntimeError),
        ("sotopia_pi.runner", "EpisodeError", RuntimeError),
    ],
)
def test_the_old_bases_are_kept(module: str, name: str, kept_base: type[BaseException]):
    assert issubclass(getattr(importlib.import_module(module), name), kept_base)


def test_the_cli_says_an_engine_error_in_its_own_words():
    from sotopia_pi.config import ConfigError

    assert describe_failure(ConfigError("config.toml: field max_turns: too big")) == (
        "config.toml: field max_turns: too big"
    )
    assert "unexpected" in describe_failure(KeyError("x"))
