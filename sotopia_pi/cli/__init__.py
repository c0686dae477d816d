"""The `sotopia-pi` command line. With no arguments it opens the TUI.

Each command group lives in its own module and registers itself on `app`.
"""

from __future__ import annotations

import sys

from .app import app

# Command modules register their commands on import.
from . import (  # noqa: E402,F401
    adapters_cmd,
    curate_cmd,
    episodes_import_cmd,
    library_cmd,
    models_cmd,
    profiles_cmd,
    run_cmd,
    train_cmd,
)

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        from tui.app import run_tui

        run_tui()
        return
    app(args=args, prog_name="sotopia-pi")
