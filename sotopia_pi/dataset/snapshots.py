"""Dataset snapshots: a named, immutable selection that training reads.

A snapshot freezes every selected episode (its turns with the curator's edits as they are at
that moment, its terminal evaluation, names and contexts) next to a manifest that says how the
selection was made: filters, manual decisions, edited turns, the (episode, side) list, counts
and a SHA-256 digest of the frozen data. Later edits, decisions or deleted episodes change
nothing in it; the database refuses to update or delete its rows, and loading checks the digest.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence

from pydantic import BaseModel, Field

from .. import __version__
from ..episode import utc_now
from ..store import Store, StoreError
from ..store import snapshots as sql
from .annotations import Decision, decisions
from .candidates import load_candidates
from .errors import SnapshotError
from .examples import SelectionStats, TokenCounter, estimate_tokens, selection_stats
from .filters import Filter
from .frozen import FrozenEpisode, freeze_episode
from .selection import FilterStep, select

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class SideRef(BaseModel):
    episode_id: str
    side: int
    scenario_id: str
    model: str


class TurnRef(BaseModel):
    episode_id: str
    index: int


class SnapshotManifest(BaseModel):
    name: str
    description: str = ""
    created_at: str = Field(default_factory=utc_now)
    sotopia_pi_version: str = __version__
    filters: list[Filter] = Field(default_factory=list)
    steps: list[FilterStep] = Field(default_factory=list)
    decisions: list[Decision] = Field(default_factory=list)
    edited_turns: list[TurnRef] = Field(default_factory=list)
    sides: list[SideRef]
    counts: SelectionStats
    digest: str = Field(description="SHA-256 of the frozen episodes, in episode id order")

    @property
    def examples(self) -> int:
        return self.counts.total.examples


class Snapshot(BaseModel):
    manifest: SnapshotManifest
    episodes: list[FrozenEpisode]


def _digest(frozen_json: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(frozen_json).encode("utf-8")).hexdigest()


def _pack(text: str) -> bytes:
    """Frozen episodes repeat the dialogue in every turn's prompt; zlib shrinks them about tenfold."""
    return zlib.compress(text.encode("utf-8"), 6)


def _unpack(data: bytes | str) -> str:
    return zlib.decompress(data).decode("utf-8") if isinstance(data, bytes) else data


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise SnapshotError(
            f"snapshot name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def snapshot_exists(store: Store, name: str) -> bool:
    return sql.snapshot_exists(store, name)


def create_snapshot(
    store: Store,
    name: str,
    filters: Sequence[Filter] = (),
    *,
    description: str = "",
    count_tokens: TokenCounter = estimate_tokens,
) -> Snapshot:
    """Select with `filters` and the manual decisions, freeze the result under `name`."""
    check_name(name)
    if snapshot_exists(store, name):
        raise SnapshotError(f"a snapshot named {name!r} already exists; snapshots are never overwritten")
    candidates = load_candidates(store)
    selection = select(candidates, filters)
    if not selection.kept:
        raise SnapshotError("the selection is empty; nothing to snapshot")
    by_key = {c.key: c for c in candidates}
    frozen = sorted(
        (freeze_episode(store, episode_id) for episode_id in dict.fromkeys(e for e, _ in selection.kept)),
        key=lambda f: f.id,
    )
    counts = selection_stats(frozen, selection.kept, count_tokens=count_tokens)
    if counts.total.examples == 0:
        raise SnapshotError("the selected sides have no turn with an action; nothing to train on")
    frozen_json = [f.model_dump_json() for f in frozen]
    manifest = SnapshotManifest(
        name=name,
        description=description,
        filters=selection.filters,
        steps=selection.steps,
        decisions=[d for d in decisions(store) if any((d.episode_id, side) in by_key for side in (0, 1))],
        edited_turns=[
            TurnRef(episode_id=f.id, index=t.index) for f in frozen for t in f.turns if t.edited_argument is not None
        ],
        sides=[
            SideRef(episode_id=e, side=s, scenario_id=by_key[(e, s)].scenario_id, model=by_key[(e, s)].model)
            for e, s in selection.kept
        ],
        counts=counts,
        digest=_digest(frozen_json),
    )
    packed = [(f.id, _pack(text)) for f, text in zip(frozen, frozen_json)]
    try:
        sql.insert_snapshot(store, name, manifest.created_at, manifest.model_dump_json(), packed)
    except StoreError as error:
        raise SnapshotError(str(error)) from error
    return Snapshot(manifest=manifest, episodes=frozen)


def list_snapshots(store: Store) -> list[SnapshotManifest]:
    """Every snapshot's manifest, oldest first."""
    return [SnapshotManifest.model_validate_json(text) for text in sql.manifest_texts(store)]


def load_snapshot(store: Store, name: str) -> Snapshot:
    """A snapshot with its frozen episodes; refuses one whose data no longer matches its digest."""
    found = sql.snapshot_texts(store, name)
    if found is None:
        known = ", ".join(m.name for m in list_snapshots(store)) or "none yet"
        raise SnapshotError(f"no snapshot named {name!r} (snapshots: {known})")
    manifest_json, packed = found
    manifest = SnapshotManifest.model_validate_json(manifest_json)
    frozen_json = [_unpack(data) for data in packed]
    if _digest(frozen_json) != manifest.digest:
        raise SnapshotError(f"snapshot {name!r} does not match its digest; its data was altered")
    return Snapshot(manifest=manifest, episodes=[FrozenEpisode.model_validate_json(t) for t in frozen_json])
