"""How long curation takes on a store of many judged episodes.

    .venv/bin/python bench/bench_curation.py [EPISODES] [TURNS]

Builds a throwaway store (EPISODES finished episodes of TURNS turns over 10 scenarios, real
agent prompts, random scores), then times: loading candidates, the best-side filter, the
selection statistics, making a snapshot, loading it, and writing the chat export.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

from sotopia_pi.dataset.candidates import load_candidates
from sotopia_pi.dataset.export import write_export
from sotopia_pi.dataset.filters import BestSide
from sotopia_pi.dataset.selection import select, selection_statistics
from sotopia_pi.dataset.snapshots import create_snapshot, load_snapshot
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
from sotopia_pi.profiles import Character, Scenario
from sotopia_pi.prompts import agent_messages, history_lines
from sotopia_pi.store import Store
from sotopia_pi.visibility import agent_view

DIMENSIONS = ("believability", "relationship", "knowledge", "secret", "social_rules",
              "financial_and_material_benefits", "goal")


def fill(store: Store, episodes: int, turns: int, rng: random.Random) -> None:
    characters = (Character(id="a", first_name="Ada", age=40), Character(id="b", first_name="Ben", age=30))
    for character in characters:
        store.save_character(character)
    scenarios = [
        Scenario(id=f"s{i}", scenario=f"Scenario {i}: two neighbours discuss a shared fence.",
                 agent_goals=["Get the fence repaired.", "Pay as little as possible."])
        for i in range(10)
    ]
    views = {s.id: [agent_view(s, characters, side) for side in (0, 1)] for s in scenarios}
    names = [c.name for c in characters]
    for number in range(episodes):
        scenario = scenarios[number % len(scenarios)]
        episode = Episode(scenario_id=scenario.id, agent_ids=["a", "b"], agent_models=["embedded", "embedded"],
                          status=EpisodeStatus.finished)
        store.save_episode(episode)
        made: list[Turn] = []
        for index in range(turns):
            side = index % 2
            prompt = agent_messages(names[side], views[scenario.id][side], history_lines(made, names), index)
            action = AgentAction(action_type=ActionType.speak, argument=f"Sentence {index} about the fence " * 3)
            turn = Turn(episode_id=episode.id, index=index, agent=side, action_type=action.action_type,
                        argument=action.argument, prompt=prompt)
            store.add_turn(turn)
            made.append(turn)
        agents = [
            AgentEvaluation(scores={d: DimensionScore(score=rng.randint(0, 10) if d == "goal" else 0) for d in DIMENSIONS})
            for _ in (0, 1)
        ]
        store.add_evaluation(Evaluation(episode_id=episode.id, kind="terminal", after_turn=turns - 1,
                                        judge_model="embedded", agents=agents))


def timed(label: str, action):
    start = time.perf_counter()
    result = action()
    print(f"{label:<28} {time.perf_counter() - start:8.3f} s")
    return result


def main() -> None:
    episodes = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    turns = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "bench.sqlite3")
        timed(f"build {episodes} x {turns} turns", lambda: fill(store, episodes, turns, random.Random(0)))
        candidates = timed("load candidates", lambda: load_candidates(store))
        selection = timed("best-side filter", lambda: select(candidates, [BestSide()]))
        stats = timed("selection statistics", lambda: selection_statistics(store, selection.kept))
        timed("create snapshot (all sides)", lambda: create_snapshot(store, "all", []))
        snapshot = timed("load snapshot", lambda: load_snapshot(store, "all"))
        report = timed("write chat export", lambda: write_export(snapshot, "chat", Path(folder) / "chat.jsonl"))
        size = (Path(folder) / "bench.sqlite3").stat().st_size
        print(f"candidates {len(candidates)}, best-side kept {len(selection.kept)} "
              f"({stats.total.examples} examples), snapshot examples {report.rows}, store {size / 1e6:.1f} MB")
        store.close()


if __name__ == "__main__":
    main()
