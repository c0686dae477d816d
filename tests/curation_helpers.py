"""Episodes with known scores, written straight into a Store, for the curation and export tests.

Turn prompts are built with the same functions the runner uses, so they are real agent prompts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sotopia_pi.episode import (
    ActionType,
    AgentAction,
    AgentEvaluation,
    DimensionScore,
    Episode,
    EpisodeStatus,
    Evaluation,
    Turn,
)
from sotopia_pi.profiles import Scenario
from sotopia_pi.prompts import messages_for_turn
from sotopia_pi.store import Store
from sotopia_pi.visibility import agent_view

from .factories import bike_scenario, seed_store, two_characters

DEFAULT_ACTIONS = [
    ("speak", "Good morning! Is this the bike you are selling?"),
    ("speak", "It is. Three hundred dollars and it is yours."),
    ("non-verbal communication", "frowns at the worn tyres"),
    ("none", ""),
    ("action", "counts out two hundred dollars"),
    ("speak", "Two fifty and we have a deal."),
    ("leave", ""),
]
BASE_TIME = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
OTHER_SCORES = {
    "believability": 8,
    "relationship": 1,
    "knowledge": 4,
    "secret": 0,
    "social_rules": 0,
    "financial_and_material_benefits": 1,
}


def seed_profiles(store: Store, scenario_ids: tuple[str, ...] = ("bike-sale", "bike-swap")) -> None:
    """Two characters, their relationship, and one scenario per id (same story, new id)."""
    seed_store(store)
    for scenario_id in scenario_ids:
        if scenario_id != "bike-sale":
            store.save_scenario(bike_scenario().model_copy(update={"id": scenario_id, "codename": scenario_id}))


def agent_scores(goal: int, overall: float | None) -> AgentEvaluation:
    scores = {name: DimensionScore(score=value, reasoning=f"{name} looked fine") for name, value in OTHER_SCORES.items()}
    scores["goal"] = DimensionScore(score=goal, reasoning="the goal was partly met")
    if overall is None:
        overall = sum(s.score for s in scores.values()) / len(scores)
    return AgentEvaluation(scores=scores, overall=overall)


def build_turns(
    store: Store, episode: Episode, scenario: Scenario, actions, human_side: int | None = None
) -> list[Turn]:
    characters = two_characters()
    names = [c.name for c in characters]
    views = [agent_view(scenario, characters, side) for side in (0, 1)]
    turns: list[Turn] = []
    for index, (kind, argument) in enumerate(actions):
        side = index % 2
        prompt = messages_for_turn(names[side], views[side], turns, names, side)
        action = AgentAction(action_type=ActionType(kind), argument=argument)
        turn = Turn(
            episode_id=episode.id,
            index=index,
            agent=side,
            action_type=action.action_type,
            argument=action.argument,
            model="human" if side == human_side else episode.agent_models[side],
            by_human=side == human_side,
            prompt=prompt,
            raw_output=action.to_json(),
        )
        store.add_turn(turn)
        turns.append(turn)
    return turns


def add_episode(
    store: Store,
    goals: tuple[int, int] | None,
    *,
    scenario_id: str = "bike-sale",
    overalls: tuple[float | None, float | None] = (None, None),
    failed_side: int | None = None,
    models: tuple[str, str] = ("embedded", "embedded"),
    tags: tuple[str, ...] = (),
    minutes: int = 0,
    actions=DEFAULT_ACTIONS,
    status: EpisodeStatus = EpisodeStatus.finished,
    human_side: int | None = None,
) -> Episode:
    """One episode; `goals` None means no terminal evaluation, `failed_side` a judge failure."""
    created = (BASE_TIME + timedelta(minutes=minutes)).isoformat(timespec="milliseconds")
    episode = Episode(
        scenario_id=scenario_id,
        agent_ids=["ines", "tomas"],
        agent_models=list(models),
        judge_model="embedded",
        status=status,
        tags=list(tags),
        created_at=created,
    )
    store.save_episode(episode)
    build_turns(store, episode, store.scenario(scenario_id), actions, human_side)
    if goals is not None:
        agents = [agent_scores(goals[side], overalls[side]) for side in (0, 1)]
        if failed_side is not None:
            agents[failed_side] = AgentEvaluation(failure="the judge's answer was not JSON")
        store.add_evaluation(
            Evaluation(
                episode_id=episode.id,
                kind="terminal",
                after_turn=len(actions) - 1,
                judge_model="embedded",
                agents=agents,
            )
        )
    return episode


def examples_per_side(actions=DEFAULT_ACTIONS) -> tuple[int, int]:
    counts = [0, 0]
    for index, (kind, _) in enumerate(actions):
        if kind != "none":
            counts[index % 2] += 1
    return counts[0], counts[1]
