"""How fast the episode inspector lists and filters thousands of stored episodes.

Fills a temporary store with N episodes (each with a few turns' worth of record and a terminal
evaluation), then times the list query with and without filters, and the inspector screen's
reload (query plus filling its table) in the headless app.

    .venv/bin/python bench/inspector_list.py [--episodes 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("SOTOPIA_PI_HOME", tempfile.mkdtemp(prefix="sotopia-pi-bench-"))

from sotopia_pi.config import Settings  # noqa: E402
from sotopia_pi.episode import AgentEvaluation, DimensionScore, Episode, EpisodeStatus, Evaluation  # noqa: E402
from sotopia_pi.episode_list import EpisodeFilter, count_episodes, list_episodes  # noqa: E402
from sotopia_pi.profiles import Character, Relationship, Scenario  # noqa: E402
from sotopia_pi.store import Store  # noqa: E402

DIMENSIONS = ("believability", "relationship", "knowledge", "secret", "social_rules", "financial_and_material_benefits", "goal")


def fill(store: Store, count: int) -> None:
    store.save_character(Character(id="a", first_name="Ada"))
    store.save_character(Character(id="b", first_name="Bo"))
    store.save_relationship(Relationship(agent1_id="a", agent2_id="b", relationship=0))
    for number in range(10):
        store.save_scenario(Scenario(id=f"s{number}", codename=f"scenario_{number}", scenario="A meeting.", agent_goals=["x", "y"]))
    models = ["embedded", "gguf:/models/q.gguf", "embedded+adapter=/adapters/round1.gguf", "openai:qwen@http://127.0.0.1:8000/v1"]
    with store.transaction() as conn:  # one transaction: filling is not what is measured
        for number in range(count):
            episode = Episode(
                id=f"E{number:07d}", scenario_id=f"s{number % 10}", agent_ids=["a", "b"],
                agent_models=[models[number % 4], models[(number + 1) % 4]], judge_model="embedded",
                status=EpisodeStatus.finished if number % 5 else EpisodeStatus.paused,
                tags=["keep"] if number % 7 == 0 else [],
                created_at=f"2025-01-01T00:{number // 60 % 60:02d}:{number % 60:02d}.{number:07d}",
            )
            conn.execute(
                "INSERT INTO episodes (id, scenario_id, status, agent1_model, agent2_model, judge_model, turn_count, "
                "created_at, updated_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (episode.id, episode.scenario_id, episode.status.value, *episode.agent_models, episode.judge_model,
                 8, episode.created_at, episode.created_at, episode.model_dump_json()),
            )
            conn.executemany("INSERT INTO episode_tags VALUES (?, ?)", [(episode.id, tag) for tag in episode.tags])
            agents = [
                AgentEvaluation(
                    scores={d: DimensionScore(score=(number + side) % 5, reasoning="a sentence of reasoning") for d in DIMENSIONS},
                    overall=((number + side) % 5),
                )
                for side in (0, 1)
            ]
            evaluation = Evaluation(episode_id=episode.id, kind="terminal", after_turn=7, judge_model="embedded", agents=agents)
            conn.execute(
                "INSERT INTO evaluations (id, episode_id, kind, after_turn, ok, created_at, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (evaluation.id, episode.id, "terminal", 7, 1, evaluation.created_at, evaluation.model_dump_json()),
            )


def timed(function, repeats: int = 5) -> float:
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        runs.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(runs), 1)


async def inspector_reload_ms(store: Store) -> float:
    from tui.app import SotopiaApp
    from tui.screens.inspector import InspectorScreen

    app = SotopiaApp(store, Settings(), load_library=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        screen = app.screen
        assert isinstance(screen, InspectorScreen)
        return timed(screen.reload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=5000)
    args = parser.parse_args()
    store = Store()
    started = time.perf_counter()
    fill(store, args.episodes)
    filled = time.perf_counter() - started
    cases = {
        "newest 500, no filter": EpisodeFilter(),
        "status=finished": EpisodeFilter(status=EpisodeStatus.finished),
        "model contains 'qwen'": EpisodeFilter(model="qwen"),
        "adapter contains 'round1'": EpisodeFilter(adapter="round1"),
        "tag=keep": EpisodeFilter(tag="keep"),
        "min overall 3": EpisodeFilter(min_overall=3),
        "scenario + model + score": EpisodeFilter(scenario="scenario_3", model="embedded", min_overall=2),
    }
    result = {
        "episodes": args.episodes,
        "fill_seconds": round(filled, 1),
        "list_ms": {name: timed(lambda f=f: list_episodes(store, f)) for name, f in cases.items()},
        "count_ms": timed(lambda: count_episodes(store)),
        "inspector_reload_ms": asyncio.run(inspector_reload_ms(store)),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
