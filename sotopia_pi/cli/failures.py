"""The last line of defence of every command: an error becomes one clear line on stderr and a
non-zero exit, never a traceback (SOTOPIA_PI_DEBUG=1 shows the traceback)."""

from __future__ import annotations

import errno
import os
import sqlite3
import sys

from .. import paths
from ..errors import SotopiaError
from ..model_text import one_line
from ..redaction import redact
from ..store import describe_database_error

DEBUG_ENV = "SOTOPIA_PI_DEBUG"

_ERRNO_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space and try again",
    errno.EDQUOT: "the disk quota is used up; free some space and try again",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def describe_failure(error: BaseException) -> str:
    """One line saying what went wrong, with secrets redacted."""
    if isinstance(error, SotopiaError):
        text = str(error)
    elif isinstance(error, sqlite3.Error):
        text = _describe_database_error(error)
    elif isinstance(error, OSError):
        text = _describe_os_error(error)
    else:
        text = f"{type(error).__name__}: {error} (unexpected; {DEBUG_ENV}=1 shows where it happened)"
    return redact(one_line(text))


def _describe_database_error(error: sqlite3.Error) -> str:
    try:
        return describe_database_error(paths.database_path(), error)
    except Exception:  # the data folder itself is the problem
        return f"the store failed: {error}"


def _describe_os_error(error: OSError) -> str:
    what = error.strerror or str(error)
    advice = _ERRNO_ADVICE.get(error.errno or 0)
    if advice and advice.split(";")[0] not in what.lower():
        what = f"{what} ({advice})"
    target = error.filename
    if target is not None:
        return f"cannot use {target}: {what}"
    return what


def exit_on_failure(error: BaseException) -> None:
    """Print the one line and exit 1; with SOTOPIA_PI_DEBUG set, re-raise instead."""
    if os.environ.get(DEBUG_ENV):
        raise error
    try:
        sys.stderr.write(f"error: {describe_failure(error)}\n")
        sys.stderr.flush()
    except OSError:
        pass
    raise SystemExit(1)
