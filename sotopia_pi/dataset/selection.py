"""Selection: manual decisions around the filters, and what a selection would produce.

A rejected side is removed before any filter runs (so the best-side rule picks the next best),
a kept side is added after the filters have run. A decision on one side overrides a decision on
the whole episode.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from ..store import Store
from ..store.curation import edit_stamps
from .candidates import OVERALL, Candidate
from .errors import CurationError
from .examples import (
    Counts,
    SelectionStats,
    TokenCounter,
    estimate_tokens,
    selection_stats,
)
from .filters import FILTER_LIST, Filter
from .frozen import SideKey, freeze_episode


class FilterStep(BaseModel):
    explanation: str
    before: int
    after: int


class Selection(BaseModel):
    filters: list[Filter] = Field(default_factory=list)
    steps: list[FilterStep] = Field(default_factory=list)
    rejected: int = Field(default=0, description="sides removed by a manual reject before the filters ran")
    added_by_keep: int = Field(default=0, description="sides a manual keep added after the filters")
    kept: list[SideKey] = Field(default_factory=list)

    def explain(self) -> list[str]:
        lines = [f"{self.rejected} side(s) rejected by hand are left out first."] if self.rejected else []
        lines += [f"{step.explanation} ({step.before} -> {step.after} sides)" for step in self.steps]
        if not self.steps:
            lines.append("No filter: every finished episode side is kept.")
        if self.added_by_keep:
            lines.append(f"{self.added_by_keep} side(s) kept by hand are added back.")
        return lines


def _check_metrics(candidates: Sequence[Candidate], filters: Sequence[Filter]) -> None:
    available = {name for c in candidates if c.judged for name in c.scores} | {OVERALL}
    judged = any(c.judged for c in candidates)
    for flt in filters:
        metric = flt.metric()
        if metric is not None and judged and metric not in available:
            raise CurationError(
                f"no judged episode has a {metric!r} score; known: {', '.join(sorted(available))}"
            )


def select(candidates: Sequence[Candidate], filters: Sequence[Filter] = ()) -> Selection:
    """Apply manual rejections, then each filter in order, then manual keeps."""
    filters = FILTER_LIST.validate_python(list(filters))
    _check_metrics(candidates, filters)
    pool = [c for c in candidates if c.decision != "reject"]
    selection = Selection(filters=filters, rejected=len(candidates) - len(pool))
    for flt in filters:
        before = len(pool)
        keep = flt.select(pool)
        pool = [c for c in pool if c.key in keep]
        selection.steps.append(FilterStep(explanation=flt.explain(), before=before, after=len(pool)))
    kept = {c.key for c in pool}
    forced = {c.key for c in candidates if c.decision == "keep"} - kept
    selection.added_by_keep = len(forced)
    order = {c.key: (c.scenario_id, c.created_at, c.episode_id, c.side) for c in candidates}
    selection.kept = sorted(kept | forced, key=order.__getitem__)
    return selection


def selection_statistics(
    store: Store,
    kept: Sequence[SideKey],
    *,
    max_prompt_tokens: int | None = None,
    count_tokens: TokenCounter = estimate_tokens,
) -> SelectionStats:
    """Examples and tokens the kept sides would produce, per side and per scenario."""
    frozen = [freeze_episode(store, episode_id) for episode_id in dict.fromkeys(e for e, _ in kept)]
    return selection_stats(frozen, kept, max_prompt_tokens=max_prompt_tokens, count_tokens=count_tokens)


class SelectionCounter:
    """selection_statistics that remembers each side it has counted, so that recounting after
    a decision or a filter change reads only sides never counted before. A side whose episode
    had a turn edited since (here, in the CLI, anywhere) is read again. Safe to share between
    worker threads."""

    def __init__(
        self,
        store: Store,
        *,
        max_prompt_tokens: int | None = None,
        count_tokens: TokenCounter = estimate_tokens,
    ) -> None:
        self.store = store
        self.max_prompt_tokens = max_prompt_tokens
        self.count_tokens = count_tokens
        self._sides: dict[SideKey, tuple[int, str, Counts]] = {}  # (edit stamp, scenario, counts)
        self._lock = threading.Lock()

    def count(self, kept: Sequence[SideKey], cancelled: Callable[[], bool] = lambda: False) -> SelectionStats | None:
        """The statistics of `kept`, or None if `cancelled()` turned true on the way."""
        stamps = edit_stamps(self.store)  # an episode edited since a side was counted is read again
        found: dict[SideKey, tuple[str, Counts]] = {}
        missing: dict[str, list[int]] = defaultdict(list)
        with self._lock:
            for key in kept:
                cached = self._sides.get(key)
                if cached is not None and cached[0] == stamps.get(key[0], 0):
                    found[key] = cached[1:]
                else:
                    missing[key[0]].append(key[1])
        for episode_id, sides in missing.items():
            if cancelled():
                return None
            frozen = freeze_episode(self.store, episode_id)
            stats = selection_stats(
                [frozen],
                [(episode_id, side) for side in sides],
                max_prompt_tokens=self.max_prompt_tokens,
                count_tokens=self.count_tokens,
            )
            stamp = stamps.get(episode_id, 0)  # read before freezing: a later edit makes it stale
            for side in sides:
                found[(episode_id, side)] = (frozen.episode.scenario_id, stats.per_side[str(side)])
                with self._lock:
                    self._sides[(episode_id, side)] = (stamp, *found[(episode_id, side)])
        return _sum_counts(kept, found)


def _sum_counts(kept: Sequence[SideKey], counted: dict[SideKey, tuple[str, Counts]]) -> SelectionStats:
    stats = SelectionStats(episodes=len({episode_id for episode_id, _ in kept}))
    for key in kept:
        scenario_id, counts = counted[key]
        buckets = (
            stats.total,
            stats.per_side.setdefault(str(key[1]), Counts()),
            stats.per_scenario.setdefault(scenario_id, Counts()),
        )
        for bucket in buckets:
            bucket.sides += counts.sides
            bucket.examples += counts.examples
            bucket.tokens += counts.tokens
    return stats


SideState = Literal["selected", "kept by hand", "rejected", "filtered out"]


class PreviewRow(BaseModel):
    candidate: Candidate
    state: SideState
    matches: bool = Field(
        description="in the selection, or rejected by hand where the filters would otherwise select it"
    )


class Preview(BaseModel):
    """A selection plus, for every candidate, where it stands: what a curation browser shows."""

    selection: Selection
    rows: list[PreviewRow]

    def matching(self) -> list[PreviewRow]:
        return [row for row in self.rows if row.matches]


def preview(candidates: Sequence[Candidate], filters: Sequence[Filter] = ()) -> Preview:
    """Select, then label every candidate. A rejected side still matches when the filters
    would pick it with every manual rejection lifted, so a browser can show it and undo it."""
    selection = select(candidates, filters)
    kept = set(selection.kept)
    rejected = {c.key for c in candidates if c.decision == "reject"}
    if rejected:
        lifted = [c.model_copy(update={"decision": None}) if c.key in rejected else c for c in candidates]
        would_keep = set(select(lifted, filters).kept)
    else:
        would_keep = set()
    rows = []
    state: SideState
    for candidate in candidates:
        if candidate.key in rejected:
            state, matches = "rejected", candidate.key in would_keep
        elif candidate.decision == "keep":
            state, matches = "kept by hand", True
        else:
            state = "selected" if candidate.key in kept else "filtered out"
            matches = candidate.key in kept
        rows.append(PreviewRow(candidate=candidate, state=state, matches=matches))
    return Preview(selection=selection, rows=rows)
