"""The dataset package's errors; each message names the episode, turn, filter, snapshot or field."""

from __future__ import annotations

from ..errors import SotopiaError


class CurationError(SotopiaError, ValueError):
    """Bad curation input; the message names the episode, turn, filter or field."""


class ExportError(SotopiaError, ValueError):
    """An export could not be made; the message names the snapshot, episode or turn."""


class PromptLayoutError(ExportError):
    """A prompt has no closing block, so its dialogue history cannot be cut."""


class SnapshotError(CurationError):
    """A snapshot could not be made or read; the message says which and why."""
