"""The store's errors, in a module of their own so that store modules the Store itself calls
(leases) can raise them without importing the Store."""

from __future__ import annotations

from ..errors import SotopiaError


class StoreError(SotopiaError, RuntimeError):
    pass


class NotFound(StoreError):
    pass
