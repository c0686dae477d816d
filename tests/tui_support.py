"""Helpers for the TUI tests: a seeded store, replay files, a backend that holds its answer
until the test lets it go, and a poll-until for Pilot."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from sotopia_pi.backends import Cancelled, Completion, create_backend
from sotopia_pi.backends.replay import ReplayBackend
from sotopia_pi.config import Settings
from sotopia_pi.episode import ChatMessage

from .helpers import replay_model, wait_until  # noqa: F401 - the TUI tests import wait_until from here


def replay_file(directory: Path, name: str, outputs: Sequence[str]) -> str:
    return replay_model(directory / f"{name}.json", list(outputs))


def replay_settings(directory: Path, side1: Sequence[str], side2: Sequence[str], judge: Sequence[str], **fields) -> Settings:
    return Settings(
        agent1_model=replay_file(directory, "side1", side1),
        agent2_model=replay_file(directory, "side2", side2),
        judge_model=replay_file(directory, "judge", judge),
        **fields,
    )


class HeldBackend:
    """Streams the start of its answer, then waits for `release` (or the runner's cancel)
    before finishing: a model caught in the middle of generating."""

    def __init__(self, outputs: Sequence[str], name: str = "held"):
        self.name = name
        self._inner = ReplayBackend(outputs, name)
        self.release = threading.Event()
        self.generating = threading.Event()
        self.cancelled = 0

    def complete(self, messages: list[ChatMessage], *, on_token=None, cancel=None, **options) -> Completion:
        self.generating.set()
        if on_token is not None:
            on_token('{"action_type": "speak", "argument": "Let me th')
        try:
            while not self.release.wait(0.02):
                if cancel is not None and cancel.is_set():
                    self.cancelled += 1
                    raise Cancelled("cancelled while generating")
        finally:
            self.generating.clear()
        return self._inner.complete(messages, on_token=on_token, cancel=cancel, **options)

    def close(self) -> None:
        pass


def factory_with(held: dict[str, HeldBackend]) -> Callable:
    """A backend factory that hands out the given held backends by model name and builds
    every other name the normal way."""

    def build(name, **options):
        if name in held:
            return held[name]
        return create_backend(name, **options)

    return build


def demo_episodes(store) -> list[str]:
    """Three stored episodes with fixed ids, times, turns and scores (for snapshots)."""
    from sotopia_pi.episode import (
        ActionType,
        AgentEvaluation,
        ChatMessage,
        DimensionScore,
        Episode,
        EpisodeStatus,
        Evaluation,
        Turn,
    )

    from .factories import GOOD_SCORES, seed_store

    seed_store(store)

    def evaluation(episode_id: str, kind: str, after: int, shift: int, created_at: str) -> Evaluation:
        def agent(delta: int) -> AgentEvaluation:
            scores = {
                name: DimensionScore(score=max(-10, min(10, value - delta)), reasoning=f"{name}: reason {delta}")
                for name, value in GOOD_SCORES.items()
            }
            scores["relationship"] = DimensionScore(score=max(-5, min(5, 2 - delta)), reasoning="steady")
            scores["financial_and_material_benefits"] = DimensionScore(score=1, reasoning="a fair price")
            scores["secret"] = DimensionScore(score=0, reasoning="kept")
            scores["social_rules"] = DimensionScore(score=-1, reasoning="a little pushy")
            return AgentEvaluation(scores=scores, overall=sum(s.score for s in scores.values()) / 7)

        return Evaluation(
            episode_id=episode_id, kind=kind, after_turn=after, judge_model="embedded",
            agents=[agent(shift), agent(shift + 1)], latency_ms=1200.0, created_at=created_at,
        )

    lines = [
        (0, ActionType.speak, "Two-fifty, and the lights are new."),
        (1, ActionType.non_verbal, "runs a thumb over the worn front tyre"),
        (0, ActionType.speak, "Tyres are cheap. The frame is what you pay for."),
        (1, ActionType.speak, "Two hundred, cash, right now."),
        (0, ActionType.leave, ""),
    ]
    finished = Episode(
        id="01EPISODEFINISHED000000000", scenario_id="bike-sale", agent_ids=["ines", "tomas"],
        agent_models=["embedded", "human"], judge_model="embedded", status=EpisodeStatus.finished,
        end_reason="Ines Varga left the conversation", tags=["demo"], created_at="2025-03-01T10:00:00.000+00:00",
    )
    store.save_episode(finished)
    for index, (agent, kind, argument) in enumerate(lines):
        store.add_turn(Turn(
            episode_id=finished.id, index=index, agent=agent, action_type=kind, argument=argument,
            model="human" if agent == 1 else "embedded", by_human=agent == 1,
            prompt=[ChatMessage(role="system", content=f"You are {'Ines' if agent == 0 else 'Tomas'}."),
                    ChatMessage(role="user", content=f"You are at Turn #{index}.")],
            raw_output="" if agent == 1 else f'{{"action_type": "{kind.value}", "argument": "{argument}"}}',
            latency_ms=640.0 + index, prompt_tokens=500 + 20 * index, cached_tokens=480, completion_tokens=18,
        ))
    for after, shift in ((0, 3), (2, 2), (3, 1)):
        store.add_evaluation(evaluation(finished.id, "provisional", after, shift, f"2025-03-01T10:00:0{after}.000+00:00"))
    store.add_evaluation(evaluation(finished.id, "terminal", 4, 0, "2025-03-01T10:01:00.000+00:00"))

    paused = Episode(
        id="01EPISODEPAUSED00000000000", scenario_id="bike-sale", agent_ids=["ines", "tomas"],
        agent_models=["human", "embedded"], judge_model="embedded", status=EpisodeStatus.paused,
        created_at="2025-03-02T09:00:00.000+00:00",
    )
    store.save_episode(paused)
    store.add_turn(Turn(episode_id=paused.id, index=0, agent=0, action_type=ActionType.speak,
                        argument="Morning! Still looking for a bike?", model="human", by_human=True))
    store.add_turn(Turn(episode_id=paused.id, index=1, agent=1, action_type=ActionType.speak,
                        argument="Maybe. What are you asking?", model="embedded"))
    store.add_evaluation(evaluation(paused.id, "provisional", 1, 1, "2025-03-02T09:00:05.000+00:00"))

    failed = Episode(
        id="01EPISODEERROR000000000000", scenario_id="bike-sale", agent_ids=["tomas", "ines"],
        agent_models=["openai:qwen@http://127.0.0.1:9/v1", "embedded"], judge_model="", status=EpisodeStatus.paused,
        last_error="cannot reach http://127.0.0.1:9/v1: connection refused", created_at="2025-03-03T08:00:00.000+00:00",
    )
    store.save_episode(failed)
    return [finished.id, paused.id, failed.id]
