"""How the curation screen keeps up with a store of many judged episodes.

    .venv/bin/python bench/bench_tui_curation.py [EPISODES] [TURNS]

Builds a throwaway store (as bench_curation.py does), opens the app headless at 120x40 and
times, from the key press: loading the candidates into the table (in a worker), counting
the whole selection (in another), one reject key (store write, re-selection, redraw, recount
from the counter's memory), adding a best-side filter, and sorting every row by goal.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from bench_curation import fill

from sotopia_pi.config import Settings
from sotopia_pi.store import Store
from tui.app import SotopiaApp
from tui.screens.curation import CurationScreen


async def until(pilot, done, limit: float = 300.0) -> None:
    deadline = time.perf_counter() + limit
    while not done():
        if time.perf_counter() > deadline:
            raise TimeoutError("the screen did not settle")
        await pilot.pause(0.01)


async def measure(store: Store) -> None:
    app = SotopiaApp(store, Settings(), load_library=False)
    async with app.run_test(size=(120, 40)) as pilot:
        start = time.perf_counter()
        await pilot.press("f6")
        screen = app.screen
        assert isinstance(screen, CurationScreen)
        await until(pilot, lambda: not screen.loading)
        print(f"{'load candidates + table':<30} {time.perf_counter() - start:8.3f} s  ({len(screen.rows)} rows)")
        await until(pilot, lambda: not screen.counting)
        examples = screen.stats.total.examples
        print(f"{'... and count them all':<30} {time.perf_counter() - start:8.3f} s  ({examples} examples)")

        start = time.perf_counter()
        await pilot.press("r")
        print(f"{'reject key (write + redraw)':<30} {time.perf_counter() - start:8.3f} s")
        await until(pilot, lambda: not screen.counting)

        await pilot.press("slash", *"best-side")
        start = time.perf_counter()
        await pilot.press("enter")
        print(f"{'add best-side filter':<30} {time.perf_counter() - start:8.3f} s  ({len(screen.rows)} rows)")
        await until(pilot, lambda: not screen.counting)
        await pilot.press("ctrl+l")
        await until(pilot, lambda: not screen.counting)

        start = time.perf_counter()
        screen.sort_by("goal")
        await pilot.pause()
        print(f"{'sort all rows by goal':<30} {time.perf_counter() - start:8.3f} s")


def main() -> None:
    episodes = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    turns = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "bench.sqlite3")
        start = time.perf_counter()
        fill(store, episodes, turns, random.Random(0))
        print(f"{f'build {episodes} x {turns} turns':<30} {time.perf_counter() - start:8.3f} s")
        asyncio.run(measure(store))
        store.close()


if __name__ == "__main__":
    main()
