"""The Typer application and the helpers every command shares."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from pydantic import BaseModel

app = typer.Typer(
    name="sotopia-pi",
    help="A terminal studio for socially intelligent language agents. Run with no arguments for the TUI.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def emit_json(document: Any) -> None:
    """Print one JSON document on stdout (what every `--json` flag promises)."""
    if isinstance(document, BaseModel):
        document = document.model_dump(mode="json")
    json.dump(document, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a clear error on stderr and return the Exit to raise."""
    from ..model_text import clean_text
    from ..redaction import redact

    typer.secho(f"error: {redact(clean_text(str(message)))}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def progress(message: str) -> None:
    """Progress for long runs goes to stderr so that stdout stays one JSON document."""
    typer.echo(message, err=True)


def user_settings():
    """The settings the TUI's Settings screen saved (file, then SOTOPIA_PI_* variables): the
    defaults of every option a command leaves unset. A bad file is said once and the defaults
    are used, as the TUI does."""
    from .. import config

    settings, error = config.load_or_default()
    if error:
        progress(f"warning: {error}")
    return settings


def open_store():
    """The user's store, with the built-in scenario library installed on first use."""
    from ..store import Store

    store = Store()
    try:
        from ..library import LibraryError, ensure_library
    except ImportError:  # the library loader is not part of this build yet
        return store
    try:
        ensure_library(store)
    except LibraryError as error:
        progress(f"warning: the built-in scenario library did not load: {error}")
    return store
