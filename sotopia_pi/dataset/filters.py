"""Filters: pure functions from candidate sides to the kept (episode id, side) set.

SOTOPIA-pi's rules (the best side per scenario, a score cutoff with balancing, the top fraction)
and the plain ones (model, adapter, tag, date, person, scenario, kept by hand), each as a pydantic
model that selects, explains itself in a sentence and parses from the command-line grammar.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, TypeAdapter, model_validator

from .candidates import OVERALL, Candidate
from .errors import CurationError
from .frozen import SideKey


def _rank_key(metric: str):
    """Best first: metric, then overall, then the earlier episode, then the id."""

    def key(candidate: Candidate) -> tuple:
        overall = candidate.overall if candidate.overall is not None else -math.inf
        return (-candidate.score(metric), -overall, candidate.created_at, candidate.episode_id)  # type: ignore[operator]

    return key


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
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _parse_moment(text: str, end_of_day: bool) -> datetime:
    """An ISO date or date-time; a bare date means the start (or end) of that day, in UTC."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day, time.max if end_of_day else time.min, tzinfo=UTC)
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
        return {c.key for c in candidates if any(self.model in (p.model, p.base_model) for p in c.playing_models())}

    def explain(self) -> str:
        return f"Keep sides played by {self.model} (with or without an adapter, unless the name gives one)."


def _adapter_matches(adapter: str, wanted: str) -> bool:
    """The turn's adapter is `wanted` as written, or `wanted` is its folder name."""
    return bool(adapter) and wanted in (adapter.rstrip("/"), adapter.rstrip("/").split("/")[-1])


class AdapterIs(_FilterBase):
    """`adapter` None keeps sides whose turns were all played by a base model; otherwise a side
    at least one of whose turns ran that adapter (its path, its folder name, or NAME@vN)."""

    kind: Literal["adapter"] = "adapter"
    adapter: str | None = None

    def select(self, candidates: Sequence[Candidate]) -> set[SideKey]:
        if self.adapter is None:
            return {c.key for c in candidates if not any(p.adapter for p in c.playing_models())}
        wanted = self.adapter.rstrip("/")
        return {c.key for c in candidates if any(_adapter_matches(p.adapter, wanted) for p in c.playing_models())}

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
    def _valid(self) -> DateRange:
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
