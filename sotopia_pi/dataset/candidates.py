"""Candidate sides: one agent's part in one finished episode, as the filters see it.

A candidate carries that agent's terminal scores, the episode's tags (the runner's and the
curator's), the manual decision on it, and the models that played its turns (each turn records
its model and adapter, so a side swapped to another adapter mid-episode lists both).

A side of an episode whose judge failed (on either side) or that has no terminal evaluation has
no scores: a failure is not a score of 0.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..episode import AgentEvaluation, Episode, EpisodeStatus, Evaluation, overall_score
from ..store import Store
from ..store.curation import Player, SideActivity, side_activity
from .annotations import curator_tags, decision_map, finished_episode, resolve_decision
from .frozen import SideKey

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


class Candidate(BaseModel):
    """One side of one finished episode, as the filters see it."""

    episode_id: str
    side: int = Field(ge=0, le=1)
    scenario_id: str
    model: str = Field(description="the model that played the side's last model turn (the episode's model if none)")
    base_model: str = Field(description="that model without its adapter")
    adapter: str | None = Field(default=None, description="the adapter of that turn; None for the base model")
    players: list[Player] = Field(
        default_factory=list, description="every model (with its adapter) that played a turn of this side, in play order"
    )
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

    def playing_models(self) -> list[Player]:
        """The models that played its turns (for a candidate built without them, its model)."""
        return self.players or [Player(model=self.model, adapter=self.adapter or "")]


def _judge_failure(evaluation: Evaluation | None, side: int) -> str | None:
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


def _scores(agent: AgentEvaluation | None) -> tuple[dict[str, float], float | None]:
    """The dimension scores and the overall (the judge's, else the mean of the dimensions)."""
    if agent is None or not agent.scores:
        return {}, agent.overall if agent else None
    overall = agent.overall if agent.overall is not None else overall_score(agent.scores)
    return {name: float(s.score) for name, s in agent.scores.items()}, overall


def _side_candidate(
    episode: Episode, side: int, evaluation: Evaluation | None, activity: SideActivity, tags: list[str], decision
) -> Candidate:
    players = activity.players or [Player(model=episode.agent_models[side])]
    last = players[-1]
    failure = _judge_failure(evaluation, side)
    scores, overall = _scores(evaluation.agents[side] if evaluation is not None else None)
    return Candidate(
        episode_id=episode.id,
        side=side,
        scenario_id=episode.scenario_id,
        model=last.model,
        base_model=last.base_model,
        adapter=last.adapter or None,
        players=players,
        tags=tags,
        created_at=episode.created_at,
        by_human=activity.by_human,
        examples=activity.examples,
        scores=scores if failure is None else {},
        overall=overall if failure is None else None,
        judge_failure=failure,
        decision=decision,
    )


def _episode_candidates(store: Store, episode: Episode, activity, tags, decisions) -> list[Candidate]:
    evaluation = store.terminal_evaluation(episode.id)
    episode_tags = list(dict.fromkeys([*episode.tags, *tags.get(episode.id, [])]))
    return [
        _side_candidate(
            episode,
            side,
            evaluation,
            activity.get((episode.id, side), SideActivity()),
            episode_tags,
            resolve_decision(decisions, episode.id, side),
        )
        for side in (0, 1)
    ]


def load_candidates(store: Store) -> list[Candidate]:
    """Both sides of every finished episode, with scores, tags and manual decisions."""
    activity = side_activity(store)
    tags = curator_tags(store)
    decisions = decision_map(store)
    candidates: list[Candidate] = []
    for episode in reversed(store.episodes(status=EpisodeStatus.finished)):
        candidates += _episode_candidates(store, episode, activity, tags, decisions)
    return candidates


def episode_candidates(store: Store, episode_id: str) -> list[Candidate]:
    """The two candidate sides of one finished episode as they are now (after a decision or
    a tag changed them), without reloading every episode."""
    episode = finished_episode(store, episode_id, "curated")
    return _episode_candidates(
        store, episode, side_activity(store, episode.id), curator_tags(store), decision_map(store)
    )
