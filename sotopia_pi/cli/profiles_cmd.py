"""Commands on profiles: Sotopia import/export and listings (filled in by the Sotopia-compatibility work)."""

from __future__ import annotations
