"""Curation: which sides of which judged episodes become training data.

The unit is a *candidate side*: one agent's part in one finished episode, with that agent's
terminal scores. Filters are pure functions from candidates to the kept (episode id, side) set;
a list of Filter models is applied in order, each to what the previous one kept.

Manual decisions sit around the filters: a rejected side is removed before any filter runs (so
the best-side rule picks the next best), a kept side is added after the filters have run. A
decision on one side overrides a decision on the whole episode.

A score filter never selects a side of an episode whose judge failed (on either side) or that
has no terminal evaluation: a failure is not a score of 0.

Manual decisions, curator tags and turn edits are stored in their own tables (see the store's
migration 2), so they survive restarts and never collide with what the runner writes.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, time, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, TypeAdapter, model_validator

from ..backends.base import ModelNameError, format_model_name, parse_model_name
from ..errors import SotopiaError
from ..episode import ActionType, EpisodeStatus, utc_now
from .export import (
    Counts,
    SelectionStats,
    SideKey,
    TokenCounter,
    estimate_tokens,
    freeze_episode,
    selection_stats,
)
from ..store import NotFound, Store, StoreError

SOTOPIA_DIMENSIONS = (
    "believability",
    "relationship",
    "knowledge",
    "secret",
    "social_rules",
    "financial_and_material_benefits",
    "goal",
)
OVERALL = "overall"
WHOLE_EPISODE = -1


class CurationError(SotopiaError, ValueError):
    """Bad curation input; the message names the episode, turn, filter or field."""


# -- candidates ---------------------------------------------------------------------------


def split_model_name(name: str) -> tuple[str, str | None]:
    """(base model, adapter path or None) of a stored model name."""
    try:
        spec = parse_model_name(name)
    except ModelNameError:
        base, _, adapter = name.partition("+adapter=")
        return base, adapter or None
    if spec.adapter is None:
        return name, None
    return format_model_name(dataclasses.replace(spec, adapter=None)), spec.adapter


class Candidate(BaseModel):
    """One side of one finished episode, as the filters see it."""

    episode_id: str
    side: int = Field(ge=0, le=1)
    scenario_id: str
    model: str
    base_model: str
    adapter: str | None = None
    tags: list[str] = Field(default_factory=list)
    created_at: str
    by_human: bool = False
    examples: int = 0
    scores: dict[str, float] = Field(default_factory=dict)
    overall: float | None = None
    judge_failure: str | None = None
    decision: Literal["keep", "reject"] | None = None

    @property
    def key(self) -> SideKey:
        return (self.episode_id, self.side)

    @property
    def judged(self) -> bool:
        return self.judge_failure is None

    def score(self, metric: str) -> float | None:
        """The score on one dimension (or "overall"); None when the judge failed or lacks it."""
        if not self.judged:
            return None
        if metric == OVERALL:
            return self.overall
        return self.scores.get(metric)


def _rank_key(metric: str):
    """Best first: metric, then overall, then the earlier episode, then the id."""

    def key(candidate: Candidate) -> tuple:
        overall = candidate.overall if candidate.overall is not None else -math.inf
        return (-candidate.score(metric), -overall, candidate.created_at, candidate.episode_id)  # type: ignore[operator]

    return key


def _side_activity(store: Store, episode_id: str | None = None) -> dict[SideKey, tuple[int, bool]]:
    """(examples, played by a person) for every side that has turns (of one episode if given);
    an example is a turn with an action other than none and a recorded prompt, as
    export.is_example_turn says."""
    where, params = ("WHERE episode_id=? ", (episode_id,)) if episode_id is not None else ("", ())
    with store.transaction() as conn:
        rows = conn.execute(
            "SELECT episode_id, agent, "
            "SUM(action_type != ? AND COALESCE(json_array_length(data, '$.prompt'), 0) > 0) AS acted, "
            "MAX(COALESCE(json_extract(data, '$.by_human'), 0)) AS human "
            f"FROM turns {where}GROUP BY episode_id, agent",
            (ActionType.none.value, *params),
        ).fetchall()
    return {(row["episode_id"], row["agent"]): (row["acted"], bool(row["human"])) for row in rows}


def _judge_failure(evaluation, side: int) -> str | None:
    if evaluation is None:
        return "no terminal evaluation"
    mine, partner = evaluation.agents[side], evaluation.agents[1 - side]
    if mine.failure is not None:
        return mine.failure
    if partner.failure is not None:
        return f"the judge failed on the other side: {partner.failure}"
    if not mine.scores:
        return "the judge gave no scores"
    return None


def _episode_candidates(store: Store, episode, activity, tags, decisions) -> list[Candidate]:
    evaluation = store.terminal_evaluation(episode.id)
    episode_tags = list(dict.fromkeys([*episode.tags, *tags.get(episode.id, [])]))
    candidates: list[Candidate] = []
    for side in (0, 1):
        model = episode.agent_models[side]
        base_model, adapter = split_model_name(model)
        examples, by_human = activity.get((episode.id, side), (0, False))
        failure = _judge_failure(evaluation, side)
        agent = evaluation.agents[side] if evaluation is not None else None
        scores = {name: float(s.score) for name, s in agent.scores.items()} if agent else {}
        overall = agent.overall if agent else None
        if overall is None and scores:
            overall = sum(scores.values()) / len(scores)
        candidates.append(
            Candidate(
                episode_id=episode.id,
                side=side,
                scenario_id=episode.scenario_id,
                model=model,
                base_model=base_model,
                adapter=adapter,
                tags=episode_tags,
                created_at=episode.created_at,
                by_human=by_human,
                examples=examples,
                scores=scores if failure is None else {},
                overall=overall if failure is None else None,
                judge_failure=failure,
                decision=resolve_decision(decisions, episode.id, side),
            )
        )
    return candidates


def load_candidates(store: Store) -> list[Candidate]:
    """Both sides of every finished episode, with scores, tags and manual decisions."""
    activity = _side_activity(store)
    tags = curator_tags(store)
    decisions = decision_map(store)
    candidates: list[Candidate] = []
    for episode in reversed(store.episodes(status=EpisodeStatus.finished)):
        candidates += _episode_candidates(store, episode, activity, tags, decisions)
    return candidates


def episode_candidates(store: Store, episode_id: str) -> list[Candidate]:
    """The two candidate sides of one finished episode as they are now (after a decision or
    a tag changed them), without reloading every episode."""
    episode = _finished_episode(store, episode_id, "curated")
    return _episode_candidates(
        store, episode, _side_activity(store, episode.id), curator_tags(store), decision_map(store)
    )


# -- filters ------------------------------------------------------------------------------


def _group(candidates: Iterable[Candidate], by_side: bool) -> dict[tuple, list[Candidate]]:
    groups: dict[tuple, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        groups[(candidate.scenario_id, candidate.side if by_side else None)].append(candidate)
    return groups


def best_side_per_scenario(candidates: Iterable[Candidate], metric: str = "goal") -> set[SideKey]:
    """For each scenario and each side, the one judged episode with the highest score."""
    scored = [c for c in candidates if c.score(metric) is not None]
    return {min(group, key=_rank_key(metric)).key for group in _group(scored, by_side=True).values()}


def score_cutoff(
    candidates: Iterable[Candidate], dimension: str, threshold: float, balance: bool = False
) -> set[SideKey]:
    """Sides scoring at least `threshold`; with `balance`, per scenario the side with more kept
    episodes is cut to the other side's count, keeping the highest scores."""
    passed = [c for c in candidates if (score := c.score(dimension)) is not None and score >= threshold]
    if not balance:
        return {c.key for c in passed}
    kept: set[SideKey] = set()
    by_scenario: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in passed:
        by_scenario[candidate.scenario_id].append(candidate)
    for group in by_scenario.values():
        sides = [sorted((c for c in group if c.side == side), key=_rank_key(dimension)) for side in (0, 1)]
        count = min(len(sides[0]), len(sides[1]))
        kept.update(c.key for side in sides for c in side[:count])
    return kept


def top_fraction(
    candidates: Iterable[Candidate], fraction: float, metric: str = "goal", per_side: bool = False
) -> set[SideKey]:
    """Per scenario (and per side if asked), the best ceil(fraction x judged sides) sides."""
    scored = [c for c in candidates if c.score(metric) is not None]
    kept: set[SideKey] = set()
    for group in _group(scored, by_side=per_side).values():
        count = math.ceil(round(fraction * len(group), 9))
        kept.update(c.key for c in sorted(group, key=_rank_key(metric))[:count])
    return kept


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _parse_moment(text: str, end_of_day: bool) -> datetime:
    """An ISO date or date-time; a bare date means the start (or end) of that day, in UTC."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day, time.max if end_of_day else time.min, tzinfo=timezone.utc)
        return _as_utc(datetime.fromisoformat(text))
    except ValueError as error:
        raise ValueError(f"{text!r} is not an ISO date (2025-01-31) or date-time") from error


class _FilterBase(BaseModel):
    def select(self, candidates: Sequence[Candidate]) -> set[SideKey]:
        raise NotImplementedError

    def explain(self) -> str:
        raise NotImplementedError

    def metric(self) -> str | None:
        """The score this filter ranks or cuts on, or None for a filter that reads no score."""
        return None


def _check_metric(value: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", value):
        raise ValueError(f"{value!r} is not a dimension name (e.g. goal, believability, overall)")
    return value


Metric = Annotated[str, AfterValidator(_check_metric)]


class BestSide(_FilterBase):
    kind: Literal["best_side"] = "best_side"
    by: Metric = "goal"


    def select(self, candidates: Sequence[Candidate]) -> set[SideKey]:
        return best_side_per_scenario(candidates, self.by)

    def explain(self) -> str:
        tie = "the overall score, then the earlier episode" if self.by != OVERALL else "the earlier episode"
        return (
            f"For each scenario and each side, keep the single episode with the highest {self.by} "
            f"score ({tie} breaks ties)."
        )

    def metric(self) -> str:
        return self.by


class Cutoff(_FilterBase):
    kind: Literal["cutoff"] = "cutoff"
    dimension: Metric = "goal"
    threshold: float
    balance: bool = False


    def select(self, candidates: Sequence[Candidate]) -> set[SideKey]:
        return score_cutoff(candidates, self.dimension, self.threshold, self.balance)

    def explain(self) -> str:
        text = f"Keep sides whose {self.dimension} score is {self.threshold:g} or more."
        if self.balance:
            text += (
                " Then, per scenario, cut the side with more kept episodes down to the other "
                "side's count, keeping the highest scores."
            )
        return text

    def metric(self) -> str:
        return self.dimension


class TopFraction(_FilterBase):
    kind: Literal["top_fraction"] = "top_fraction"
    fraction: float = Field(gt=0, le=1)
    by: Metric = "goal"
    per_side: bool = False


    def select(self, candidates: Sequence[Candidate]) -> set[SideKey]:
        return top_fraction(candidates, self.fraction, self.by, self.per_side)

    def explain(self) -> str:
        group = "scenario and side" if self.per_side else "scenario"
        return (
            f"Per {group}, keep the best {self.fraction:.0%} of judged sides by {self.by} score "
            "(rounded up, so at least one)."
        )

    def metric(self) -> str:
        return self.by


class ModelIs(_FilterBase):
    kind: Literal["model"] = "model"
    model: str = Field(min_length=1)

    def select(self, candidates: Sequence[Candidate]) -> set[SideKey]:
        return {c.key for c in candidates if self.model in (c.model, c.base_model)}

    def explain(self) -> str:
        return f"Keep sides played by {self.model} (with or without an adapter, unless the name gives one)."


class AdapterIs(_FilterBase):
    """`adapter` None keeps sides played by a base model; otherwise the adapter path or its
    last path component must match."""

    kind: Literal["adapter"] = "adapter"
    adapter: str | None = None

    def select(self, candidates: Sequence[Candidate]) -> set[SideKey]:
        if self.adapter is None:
            return {c.key for c in candidates if c.adapter is None}
        wanted = self.adapter.rstrip("/")
        return {
            c.key
            for c in candidates
            if c.adapter is not None and wanted in (c.adapter.rstrip("/"), c.adapter.rstrip("/").split("/")[-1])
        }

    def explain(self) -> str:
        if self.adapter is None:
            return "Keep sides played by a base model (no adapter)."
        return f"Keep sides played with the adapter {self.adapter}."


class TagIs(_FilterBase):
    kind: Literal["tag"] = "tag"
    tags: list[str] = Field(min_length=1)

    def select(self, candidates: Sequence[Candidate]) -> set[SideKey]:
        wanted = set(self.tags)
        return {c.key for c in candidates if wanted.intersection(c.tags)}

    def explain(self) -> str:
        return f"Keep episodes tagged {' or '.join(self.tags)}."


class DateRange(_FilterBase):
    """Episodes created between `since` and `until`, both inclusive; a bare date covers the
    whole day (UTC)."""

    kind: Literal["date"] = "date"
    since: str | None = None
    until: str | None = None

    @model_validator(mode="after")
    def _valid(self) -> "DateRange":
        if self.since is None and self.until is None:
            raise ValueError("a date filter needs since, until or both")
        for text in (self.since, self.until):
            if text is not None:
                _parse_moment(text, end_of_day=False)
        return self

    def select(self, candidates: Sequence[Candidate]) -> set[SideKey]:
        low = _parse_moment(self.since, end_of_day=False) if self.since else None
        high = _parse_moment(self.until, end_of_day=True) if self.until else None
        kept = set()
        for c in candidates:
            created = _as_utc(datetime.fromisoformat(c.created_at))
            if (low is None or created >= low) and (high is None or created <= high):
                kept.add(c.key)
        return kept

    def explain(self) -> str:
        if self.since and self.until:
            return f"Keep episodes created from {self.since} through {self.until}."
        if self.since:
            return f"Keep episodes created on or after {self.since}."
        return f"Keep episodes created on or before {self.until}."


class HumanPlayed(_FilterBase):
    kind: Literal["human"] = "human"

    def select(self, candidates: Sequence[Candidate]) -> set[SideKey]:
        return {c.key for c in candidates if c.by_human}

    def explain(self) -> str:
        return "Keep sides in which a person played at least one turn."


class ScenarioIs(_FilterBase):
    kind: Literal["scenario"] = "scenario"
    scenario_ids: list[str] = Field(min_length=1)

    def select(self, candidates: Sequence[Candidate]) -> set[SideKey]:
        wanted = set(self.scenario_ids)
        return {c.key for c in candidates if c.scenario_id in wanted}

    def explain(self) -> str:
        return f"Keep episodes of scenario {', '.join(self.scenario_ids)}."


class ManuallyKept(_FilterBase):
    kind: Literal["kept"] = "kept"

    def select(self, candidates: Sequence[Candidate]) -> set[SideKey]:
        return {c.key for c in candidates if c.decision == "keep"}

    def explain(self) -> str:
        return "Keep only sides a person marked keep."


Filter = Annotated[
    BestSide | Cutoff | TopFraction | ModelIs | AdapterIs | TagIs | DateRange | HumanPlayed | ScenarioIs | ManuallyKept,
    Field(discriminator="kind"),
]
FILTER_LIST = TypeAdapter(list[Filter])

FILTER_GRAMMAR = """\
best-side[:METRIC]            per scenario and side, the single best episode (METRIC default goal)
cutoff:DIM>=N[:balance]       sides scoring N or more on DIM; balance evens the two sides per scenario
top:FRACTION[:METRIC][:per-side]  best FRACTION (0.2 or 20%) of judged sides per scenario
model:NAME                    sides played by NAME (base name or full name with +adapter=)
adapter:PATH|none             sides played with that adapter (path or folder name), or with none
tag:T1[,T2...]                episodes carrying any of the tags
since:DATE / until:DATE       episodes created on/after, on/before DATE (ISO date or date-time)
human                         sides in which a person played a turn
scenario:ID[,ID...]           episodes of these scenarios
kept                          only sides manually marked keep"""


def _fraction(text: str) -> float:
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def parse_filter(spec: str) -> Filter:
    """One filter from the command-line grammar in FILTER_GRAMMAR."""
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower().replace("_", "-")
    parts = rest.split(":") if rest else []
    try:
        match kind:
            case "best-side" | "best":
                return BestSide(by=parts[0]) if parts else BestSide()
            case "cutoff":
                found = re.fullmatch(r"\s*([a-z_]+)\s*>=\s*(-?[0-9.]+)\s*", parts[0] if parts else "")
                if not found:
                    raise ValueError("write cutoff:DIM>=N, e.g. cutoff:goal>=7")
                extra = [p.lower() for p in parts[1:]]
                if any(p != "balance" for p in extra):
                    raise ValueError(f"unknown cutoff option {':'.join(extra)!r}; only balance")
                return Cutoff(dimension=found[1], threshold=float(found[2]), balance="balance" in extra)
            case "top":
                if not parts:
                    raise ValueError("write top:FRACTION, e.g. top:0.2 or top:20%")
                options = [p.lower() for p in parts[1:]]
                per_side = "per-side" in options
                metrics = [p for p in options if p != "per-side"]
                return TopFraction(fraction=_fraction(parts[0]), by=metrics[0] if metrics else "goal", per_side=per_side)
            case "model":
                return ModelIs(model=rest)
            case "adapter":
                return AdapterIs(adapter=None if rest.lower() in ("", "none") else rest)
            case "tag":
                return TagIs(tags=[t.strip() for t in rest.split(",") if t.strip()])
            case "since":
                return DateRange(since=rest)
            case "until":
                return DateRange(until=rest)
            case "human":
                return HumanPlayed()
            case "scenario":
                return ScenarioIs(scenario_ids=[s.strip() for s in rest.split(",") if s.strip()])
            case "kept":
                return ManuallyKept()
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise CurationError(f"filter {spec!r}: {error}") from error
    raise CurationError(f"filter {spec!r}: unknown kind {kind!r}; filters are:\n{FILTER_GRAMMAR}")


# -- selection ----------------------------------------------------------------------------


class FilterStep(BaseModel):
    explanation: str
    before: int
    after: int


class Selection(BaseModel):
    filters: list[Filter] = Field(default_factory=list)
    steps: list[FilterStep] = Field(default_factory=list)
    rejected: int = Field(0, description="sides removed by a manual reject before the filters ran")
    added_by_keep: int = Field(0, description="sides a manual keep added after the filters")
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

    def _edit_stamps(self) -> dict[str, int]:
        """The newest turn edit of every edited episode: a side counted before it is stale."""
        rows = _rows(self.store, "SELECT episode_id, MAX(id) AS stamp FROM turn_edits GROUP BY episode_id")
        return {row["episode_id"]: row["stamp"] for row in rows}

    def count(self, kept: Sequence[SideKey], cancelled: Callable[[], bool] = lambda: False) -> SelectionStats | None:
        """The statistics of `kept`, or None if `cancelled()` turned true on the way."""
        stamps = self._edit_stamps()
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


# -- manual decisions ---------------------------------------------------------------------


class Decision(BaseModel):
    episode_id: str
    side: int | None = Field(None, description="0 or 1; None for the whole episode")
    decision: Literal["keep", "reject"]
    note: str = ""
    created_at: str = Field(default_factory=utc_now)


def _rows(store: Store, sql: str, params: Iterable = ()) -> list:
    with store.transaction() as conn:
        return conn.execute(sql, tuple(params)).fetchall()


def _side_column(side: int | None) -> int:
    if side is None:
        return WHOLE_EPISODE
    if side not in (0, 1):
        raise CurationError(f"side must be 0 or 1, not {side}")
    return side


def _episode(store: Store, episode_id: str):
    try:
        return store.episode(episode_id)
    except NotFound as error:
        raise CurationError(str(error)) from error


def _finished_episode(store: Store, episode_id: str, doing: str):
    episode = _episode(store, episode_id)
    if episode.status != EpisodeStatus.finished:
        raise CurationError(
            f"episode {episode.id} is {episode.status.value}; only finished episodes can be {doing}"
        )
    return episode


def set_decision(
    store: Store, episode_id: str, decision: Literal["keep", "reject"], side: int | None = None, note: str = ""
) -> Decision:
    """Keep or reject a whole episode (side None) or one side of it; replaces an earlier
    decision on the same target."""
    if decision not in ("keep", "reject"):
        raise CurationError(f"decision must be keep or reject, not {decision!r}")
    if decision == "keep":
        episode = _finished_episode(store, episode_id, "kept")
    else:
        episode = _episode(store, episode_id)
    record = Decision(episode_id=episode.id, side=side, decision=decision, note=note)
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO curation_decisions (episode_id, side, decision, note, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(episode_id, side) DO UPDATE SET "
            "decision=excluded.decision, note=excluded.note, created_at=excluded.created_at",
            (episode.id, _side_column(side), decision, note, record.created_at),
        )
    return record


def clear_decision(store: Store, episode_id: str, side: int | None = None) -> bool:
    """Forget the decision on an episode or side; False if there was none."""
    episode = _episode(store, episode_id)
    with store.transaction() as conn:
        cursor = conn.execute(
            "DELETE FROM curation_decisions WHERE episode_id=? AND side=?", (episode.id, _side_column(side))
        )
    return cursor.rowcount > 0


def decisions(store: Store) -> list[Decision]:
    rows = _rows(store, "SELECT * FROM curation_decisions ORDER BY episode_id, side")
    return [
        Decision(
            episode_id=row["episode_id"],
            side=None if row["side"] == WHOLE_EPISODE else row["side"],
            decision=row["decision"],
            note=row["note"],
            created_at=row["created_at"],
        )
        for row in rows
    ]


def decision_map(store: Store) -> dict[tuple[str, int | None], str]:
    return {(d.episode_id, d.side): d.decision for d in decisions(store)}


def resolve_decision(
    decision_by_target: dict[tuple[str, int | None], str], episode_id: str, side: int
) -> Literal["keep", "reject"] | None:
    """The side's own decision if any, else the whole episode's."""
    found = decision_by_target.get((episode_id, side), decision_by_target.get((episode_id, None)))
    return found  # type: ignore[return-value]


# -- curator tags -------------------------------------------------------------------------


def _check_tag(tag: str) -> str:
    tag = tag.strip()
    if not tag or "," in tag:
        raise CurationError(f"tag {tag!r} must be non-empty and contain no comma")
    return tag


def add_tags(store: Store, episode_id: str, tags: Iterable[str]) -> list[str]:
    episode = _episode(store, episode_id)
    cleaned = [_check_tag(tag) for tag in tags]
    with store.transaction() as conn:
        conn.executemany(
            "INSERT OR IGNORE INTO curation_tags (episode_id, tag, created_at) VALUES (?, ?, ?)",
            [(episode.id, tag, utc_now()) for tag in cleaned],
        )
    return curator_tags(store).get(episode.id, [])


def remove_tags(store: Store, episode_id: str, tags: Iterable[str]) -> list[str]:
    episode = _episode(store, episode_id)
    with store.transaction() as conn:
        conn.executemany(
            "DELETE FROM curation_tags WHERE episode_id=? AND tag=?", [(episode.id, t.strip()) for t in tags]
        )
    return curator_tags(store).get(episode.id, [])


def set_tags(store: Store, episode_id: str, tags: Iterable[str]) -> list[str]:
    """Make the episode's curator tags exactly `tags` (tags the runner gave it are untouched)."""
    episode = _episode(store, episode_id)
    wanted = list(dict.fromkeys(_check_tag(tag) for tag in tags))
    keep_clause = f" AND tag NOT IN ({','.join('?' * len(wanted))})" if wanted else ""
    with store.transaction() as conn:
        conn.execute(f"DELETE FROM curation_tags WHERE episode_id=?{keep_clause}", (episode.id, *wanted))
        conn.executemany(
            "INSERT OR IGNORE INTO curation_tags (episode_id, tag, created_at) VALUES (?, ?, ?)",
            [(episode.id, tag, utc_now()) for tag in wanted],
        )
    return curator_tags(store).get(episode.id, [])


def curator_tags(store: Store) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = defaultdict(list)
    for row in _rows(store, "SELECT episode_id, tag FROM curation_tags ORDER BY episode_id, tag"):
        tags[row["episode_id"]].append(row["tag"])
    return dict(tags)


# -- turn edits ---------------------------------------------------------------------------


class TurnEdit(BaseModel):
    episode_id: str
    index: int
    original: str
    edited: str | None = Field(description="None when the edit was undone")
    created_at: str


EDITABLE_ACTIONS = frozenset({ActionType.speak, ActionType.non_verbal, ActionType.action})


def is_editable(turn) -> bool:
    """Whether a turn carries text a curator can edit."""
    return turn.action_type in EDITABLE_ACTIONS


def _write_turn(store: Store, turn, original: str, edited: str | None) -> TurnEdit:
    record = TurnEdit(
        episode_id=turn.episode_id, index=turn.index, original=original, edited=edited, created_at=utc_now()
    )
    with store.transaction() as conn:
        conn.execute(
            "UPDATE turns SET data=? WHERE episode_id=? AND idx=?",
            (turn.model_dump_json(), turn.episode_id, turn.index),
        )
        conn.execute(
            "INSERT INTO turn_edits (episode_id, idx, original, edited, created_at) VALUES (?, ?, ?, ?, ?)",
            (turn.episode_id, turn.index, original, edited, record.created_at),
        )
    return record


def _turn(store: Store, episode_id: str, index: int):
    episode = _finished_episode(store, episode_id, "edited")
    turns = store.turns(episode.id)
    if not 0 <= index < len(turns):
        raise CurationError(f"episode {episode.id} has turns 0..{len(turns) - 1}; there is no turn {index}")
    return turns[index]


def edit_turn(store: Store, episode_id: str, index: int, text: str) -> TurnEdit:
    """Replace what an agent said or did at one turn. The original argument stays in the turn
    (Turn.argument); the new text goes to Turn.edited_argument and to the edit history."""
    turn = _turn(store, episode_id, index)
    if not is_editable(turn):
        raise CurationError(
            f"turn {index} of episode {turn.episode_id} is a {turn.action_type.value!r} action, which has "
            "no text; only speak, non-verbal communication and action turns can be edited"
        )
    if not text.strip():
        raise CurationError(f"the new text for turn {index} of episode {turn.episode_id} is empty")
    turn.edited_argument = text
    return _write_turn(store, turn, turn.argument, text)


def revert_turn(store: Store, episode_id: str, index: int) -> TurnEdit:
    """Undo the edit of a turn: its original argument counts again."""
    turn = _turn(store, episode_id, index)
    if turn.edited_argument is None:
        raise CurationError(f"turn {index} of episode {turn.episode_id} has no edit to undo")
    turn.edited_argument = None
    return _write_turn(store, turn, turn.argument, None)


def turn_edits(store: Store, episode_id: str | None = None) -> list[TurnEdit]:
    """The edit history, oldest first."""
    sql = "SELECT * FROM turn_edits"
    params: list = []
    if episode_id is not None:
        sql += " WHERE episode_id=?"
        params.append(_episode(store, episode_id).id)
    rows = _rows(store, sql + " ORDER BY id", params)
    return [
        TurnEdit(
            episode_id=row["episode_id"],
            index=row["idx"],
            original=row["original"],
            edited=row["edited"],
            created_at=row["created_at"],
        )
        for row in rows
    ]


__all__ = [
    "AdapterIs",
    "BestSide",
    "Candidate",
    "CurationError",
    "Cutoff",
    "DateRange",
    "Decision",
    "EDITABLE_ACTIONS",
    "FILTER_GRAMMAR",
    "Filter",
    "FilterStep",
    "HumanPlayed",
    "ManuallyKept",
    "ModelIs",
    "Preview",
    "PreviewRow",
    "ScenarioIs",
    "Selection",
    "SelectionCounter",
    "SideState",
    "StoreError",
    "TagIs",
    "TopFraction",
    "TurnEdit",
    "add_tags",
    "best_side_per_scenario",
    "clear_decision",
    "curator_tags",
    "decisions",
    "edit_turn",
    "episode_candidates",
    "is_editable",
    "load_candidates",
    "parse_filter",
    "preview",
    "remove_tags",
    "revert_turn",
    "score_cutoff",
    "select",
    "selection_statistics",
    "set_decision",
    "set_tags",
    "top_fraction",
    "turn_edits",
]
