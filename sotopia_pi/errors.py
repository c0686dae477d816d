"""The one base class of every error the engine raises on purpose.

A caller that wants "anything the engine refused, with a message meant for a person" catches
`SotopiaError`; each subclass keeps its other bases (ValueError, RuntimeError, ...) so code
that caught those keeps working.
"""

from __future__ import annotations


class SotopiaError(Exception):
    """An error the engine raised knowingly; its message is written for the user."""
