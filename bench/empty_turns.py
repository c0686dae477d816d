"""Do the embedded agents say something? Empty and repeated turns, by repeat penalty.

    .venv/bin/python bench/empty_turns.py [--model embedded] [--turns 12] [--seed 7]
        [--repeat-penalty 1.05 1.1] [--scenarios used_cargo_bike drum_practice_hours ...]

Plays one episode per held-out library scenario (both sides the model under test, no judge) for
each repeat penalty given, same seeds, in a throw-away home, and prints per penalty: turns
played, turns that speak, act or gesture with an empty argument, and turns that repeat word for
word a line the same side already said. The repeat penalty falls on every recent token, the
JSON's own quotes and keys included, which is why it matters to a small model answering in JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))  # agent_quality.play

HELD_OUT = ["used_cargo_bike", "drum_practice_hours", "last_theatre_ticket", "household_bills_split"]
SAYS_SOMETHING = {"speak", "action", "non-verbal communication"}


def count(turns) -> tuple[int, int]:
    """(empty arguments, word-for-word repeats of the same side's earlier lines)."""
    empty = repeats = 0
    said: dict[int, set[str]] = {0: set(), 1: set()}
    for turn in turns:
        if turn.action_type in SAYS_SOMETHING and not turn.argument.strip():
            empty += 1
        elif turn.argument and turn.argument in said[turn.agent]:
            repeats += 1
        said[turn.agent].add(turn.argument)
    return empty, repeats


def play_all(model: str, penalty: float, scenarios: list[str], turns: int, seed: int) -> tuple[int, int, int]:
    from agent_quality import play

    from sotopia_pi.library import ensure_library
    from sotopia_pi.store import Store

    store = Store()
    ensure_library(store)
    by_codename = {scenario.codename: scenario for scenario in store.scenarios()}
    played = empty = repeats = 0
    for codename in scenarios:
        _, episode_turns = play(store, by_codename[codename].id, model, seed, turns, repeat_penalty=penalty)
        played += len(episode_turns)
        e, r = count(episode_turns)
        empty, repeats = empty + e, repeats + r
    return played, empty, repeats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="embedded", help="a model name; embedded = the shipped agent adapter")
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat-penalty", type=float, nargs="+", default=[1.05, 1.1])
    parser.add_argument("--scenarios", nargs="+", default=HELD_OUT)
    options = parser.parse_args()
    os.environ["SOTOPIA_PI_HOME"] = tempfile.mkdtemp(prefix="empty-turns-")
    from sotopia_pi.backends import preset_for

    model = preset_for(options.model)
    print(f"{model}: {len(options.scenarios)} episodes of up to {options.turns} turns per penalty, seed {options.seed}")
    for penalty in options.repeat_penalty:
        played, empty, repeats = play_all(model, penalty, options.scenarios, options.turns, options.seed)
        print(
            f"repeat penalty {penalty:.2f}: {played} turns, empty {empty} ({empty / max(played, 1):.0%}), "
            f"word-for-word repeats {repeats} ({repeats / max(played, 1):.0%})"
        )


if __name__ == "__main__":
    main()
