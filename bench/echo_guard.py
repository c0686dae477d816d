"""How much asking the model again cuts repeated lines and role slips, and what it costs in turn time.

    .venv/bin/python bench/echo_guard.py [--model NAME] [--max-turns 20] [--scenarios 9]

Plays the held-out library scenarios (the expert corpus's held-out split) with the default
embedded agent (SmolLM2 with the shipped agent adapter; `--model embedded-base` for the bare
model) on both sides, no judge, same seeds, once with the guard off (ask_again 0) and once on
(the default, 2), and prints for each:

- lines that repeat an earlier line (the guard's own test: word-sequence ratio or shared
  trigrams >= 0.7 against any earlier line of the episode);
- repeated trigrams: the share of all word trigrams of the episode's lines that had already
  been said in it (a measure the guard does not optimise), with the expert corpus's held-out
  episodes as the reference;
- spoken lines out of role (a side speaking to itself by name, or calling itself by the other's);
- turns asked for again, and turns whose kept line is still faulty;
- mean number of turns, share ending before turn 4, mean turn time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agent_quality import AGENT_ADAPTER, open_store, play, scenario_sets, setup_home  # noqa: E402


def repeated_trigram_share(turns) -> tuple[int, int]:
    from sotopia_pi.line_checks import words

    seen: set[tuple[str, ...]] = set()
    repeated = total = 0
    for turn in turns:
        tokens = words(turn.argument)
        grams = [tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)]
        repeated += sum(gram in seen for gram in grams)
        total += len(grams)
        seen.update(grams)
    return repeated, total


def role_slip_share(store, episode, turns) -> tuple[int, int]:
    from sotopia_pi.episode import ActionType
    from sotopia_pi.line_checks import role_slip

    names = [store.character(c).name for c in episode.agent_ids]
    spoken = [t for t in turns if t.action_type == ActionType.speak]
    return sum(role_slip(t.argument, names[t.agent], names[1 - t.agent]) is not None for t in spoken), len(spoken)


def share(pairs: list[tuple[int, int]]) -> float:
    return sum(a for a, _ in pairs) / max(sum(b for _, b in pairs), 1)


def figures(store, played: list) -> dict:
    """`played`: (episode, turns) pairs."""
    from sotopia_pi.line_checks import echo_share

    episodes = [turns for _, turns in played]
    turns = [t for episode in episodes for t in episode]
    return {
        "echo": share([echo_share(t) for t in episodes]),
        "slips": share([role_slip_share(store, e, t) for e, t in played]),
        "trigrams": share([repeated_trigram_share(t) for t in episodes]),
        "asked_again": sum(t.resamples > 0 for t in turns) / max(len(turns), 1),
        "still_faulty": sum(t.echoes is not None or bool(t.role_slip) for t in turns) / max(len(turns), 1),
        "mean_turns": statistics.mean(len(e) for e in episodes),
        "early": sum(len(e) < 4 for e in episodes) / len(episodes),
        "turn_s": statistics.mean(t.latency_ms for t in turns) / 1000 if turns else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--model", default=f"embedded-base+adapter={AGENT_ADAPTER}", help="default: what `embedded` plays"
    )
    parser.add_argument("--max-turns", type=int, default=20)
    parser.add_argument("--scenarios", type=int, default=9)
    options = parser.parse_args()
    started = time.perf_counter()
    setup_home()
    store = open_store()
    scenarios = scenario_sets(store)["held-out library"][: options.scenarios]
    expert = [
        (e, store.turns(e.id))
        for e in store.episodes()
        if "split:heldout" in e.tags and "quality:expert" in e.tags and e.scenario_id in scenarios
    ]
    reference = figures(store, expert)
    print(
        f"{len(scenarios)} held-out library scenarios, {Path(options.model).name} on both sides, max {options.max_turns} turns"
    )
    print(
        f"expert corpus ({len(expert)} held-out episodes): lines repeating an earlier one {reference['echo']:.1%}, "
        f"spoken lines out of role {reference['slips']:.1%}, repeated trigrams {reference['trigrams']:.1%}"
    )
    for retries in (0, 2):
        played = [
            play(store, sid, options.model, seed=1000, max_turns=options.max_turns, ask_again=retries)
            for sid in scenarios
        ]
        f = figures(store, played)
        print(
            f"ask_again={retries}: lines repeating an earlier one {f['echo']:.1%}, spoken lines out of role "
            f"{f['slips']:.1%}, repeated trigrams {f['trigrams']:.1%}, turns asked again {f['asked_again']:.0%}, "
            f"kept line still faulty {f['still_faulty']:.0%}; mean turns {f['mean_turns']:.1f}, ended before turn 4 "
            f"{f['early']:.0%}, mean turn {f['turn_s']:.2f} s"
        )
    print(f"(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
