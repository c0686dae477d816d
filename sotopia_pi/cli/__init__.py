"""The `sotopia-pi` command line. With no arguments it opens the TUI.

Each command group lives in its own module and registers itself on `app`.
"""

from __future__ import annotations

import sys

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
from .app import app

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        if not args:
            from tui.app import run_tui

            run_tui()
            return
        app(args=args, prog_name="sotopia-pi")
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    except BrokenPipeError:  # `sotopia-pi ... | head`: the reader has gone, nothing to say
        sys.stderr.close()
        raise SystemExit(1) from None
    except Exception as error:  # one clear line, never a traceback
        from .failures import exit_on_failure

        exit_on_failure(error)
