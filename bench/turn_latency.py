"""Turn latency against turn index: a KV cache per agent versus one llama.cpp context shared.

    .venv/bin/python bench/turn_latency.py [--turns 20] [--model embedded] [--seed 7]
        [--max-tokens 48] [--scenario used_cargo_bike] [--threads N]

Plays the same episode set-up twice with the real agent prompts and the real action schema:
(a) each agent with its own LlamaCppBackend, so each agent's growing prompt extends its own
cached prefix; (b) both agents on one shared Llama, so every turn starts from the other
agent's prompt and re-reads almost everything. A `leave` or an idle turn does not end the run:
the point is latency against turn index, so every run plays all its turns.

Generation length varies from turn to turn, so the table also shows the time to the first
token (prefill plus one sampled token), which is what the prompt cache changes. Turn indices
are 0-based as in the prompts; the ratio compares the last turn with turn #2, the first turn
on which an agent speaks for the second time (turns #0 and #1 are each agent's cold start).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from statistics import mean

from sotopia_pi.backends import ChatBackend, create_backend, parse_model_name
from sotopia_pi.backends.llama_cpp_backend import LlamaCppBackend
from sotopia_pi.episode import Turn, action_json_schema
from sotopia_pi.library import load_library
from sotopia_pi.profiles import Character
from sotopia_pi.prompts import agent_messages, history_lines, parse_action
from sotopia_pi.visibility import HINT_TAGS, agent_view

LLAMA_KINDS = {"embedded", "gguf", "catalog"}
BASELINE_TURN = 2
WINDOW = 4  # turns averaged for the steadier ratio, less sensitive to one noisy turn
PER_AGENT_TARGET = 1.3
TEMPERATURE = 0.7


@dataclass
class TurnTiming:
    index: int
    latency_ms: float
    first_token_ms: float
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    action: str


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--model", default="embedded", help="any model name (shared mode needs llama.cpp)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=48, help="cap on each turn's generation")
    parser.add_argument("--scenario", default="used_cargo_bike", help="codename in the built-in library")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    options = parser.parse_args(argv)
    if options.turns <= BASELINE_TURN:
        parser.error(f"--turns must be more than {BASELINE_TURN}")
    return options


def episode_setup(codename: str):
    library = load_library()
    scenario = library.scenario(codename)
    pairs = library.valid_pairs(scenario)
    if not pairs:
        raise SystemExit(f"no pair of library characters may play {codename}")
    people = library.character_map
    characters: tuple[Character, Character] = (people[pairs[0][0]], people[pairs[0][1]])
    views = tuple(agent_view(scenario, characters, side, HINT_TAGS) for side in (0, 1))
    return scenario, characters, views


class EpisodePlay:
    """One episode played turn by turn. Every turn is played whatever the agents do (a leave or
    an idle turn does not end it); the history grows as in a real episode."""

    def __init__(self, backends: tuple[ChatBackend, ChatBackend], characters, views, max_tokens: int):
        self.backends = backends
        self.names = (characters[0].name, characters[1].name)
        self.views = views
        self.max_tokens = max_tokens
        self.schema = action_json_schema()
        self.history: list[Turn] = []
        self.timings: list[TurnTiming] = []

    def step(self) -> TurnTiming:
        index = len(self.history)
        side = index % 2
        messages = agent_messages(self.names[side], self.views[side], history_lines(self.history, self.names), index)
        first_token: list[float] = []

        def note_first_token(_piece: str) -> None:
            if not first_token:
                first_token.append(time.perf_counter())

        started = time.perf_counter()
        completion = self.backends[side].complete(
            messages, schema=self.schema, max_tokens=self.max_tokens, temperature=TEMPERATURE,
            on_token=note_first_token,
        )
        ended = time.perf_counter()
        action, _ = parse_action(completion.text)
        self.history.append(Turn(episode_id="bench", index=index, agent=side,
                                 action_type=action.action_type, argument=action.argument))
        timing = TurnTiming(
            index=index,
            latency_ms=completion.latency_ms,
            first_token_ms=((first_token[0] if first_token else ended) - started) * 1000,
            prompt_tokens=completion.prompt_tokens,
            cached_tokens=completion.cached_tokens,
            completion_tokens=completion.completion_tokens,
            action=action.action_type.value,
        )
        self.timings.append(timing)
        return timing

    def close(self) -> None:
        for backend in reversed(self.backends):  # the owner of a shared Llama is closed last
            backend.close()


def per_agent(model: str, seed: int, threads: int) -> tuple[ChatBackend, ChatBackend]:
    options = {"seed": seed, "n_threads": threads} if parse_model_name(model).kind in LLAMA_KINDS else {}
    first = create_backend(model, **options)
    options = {**options, "seed": seed + 1} if options else options
    return first, create_backend(model, **options)


def shared(model: str, seed: int, threads: int) -> tuple[ChatBackend, ChatBackend]:
    spec = parse_model_name(model)
    first = LlamaCppBackend.from_spec(spec, seed=seed, n_threads=threads)
    return first, LlamaCppBackend.from_spec(spec, llama=first.llm, seed=seed + 1)


def play_interleaved(episodes: dict[str, EpisodePlay], turns: int) -> dict[str, list[TurnTiming]]:
    """Turn i of every mode before turn i+1 of any: on a shared machine, load that comes and
    goes then weighs on all modes alike instead of on whichever ran last."""
    for index in range(turns):
        for name, episode in episodes.items():
            timing = episode.step()
            print(f"  turn {index:>2} {name}: {timing.latency_ms:.0f} ms", file=sys.stderr, flush=True)
    return {name: episode.timings for name, episode in episodes.items()}


def print_table(modes: dict[str, list[TurnTiming]]) -> None:
    columns = ("ms", "ttft", "prompt", "cached", "out", "action")
    head = " turn |" + " |".join(f" {name:^49}" for name in modes)
    sub = "      |" + " |".join(f" {columns[0]:>7} {columns[1]:>7} {columns[2]:>7} {columns[3]:>7} "
                              f"{columns[4]:>4} {columns[5]:<12}" for _ in modes)
    print(head)
    print(sub)
    for row in zip(*modes.values()):
        cells = " |".join(
            f" {t.latency_ms:>7.0f} {t.first_token_ms:>7.0f} {t.prompt_tokens:>7} {t.cached_tokens:>7} "
            f"{t.completion_tokens:>4} {t.action[:12]:<12}"
            for t in row
        )
        print(f" {row[0].index:>4} |{cells}")


def print_summary(modes: dict[str, list[TurnTiming]]) -> None:
    print()
    for name, timings in modes.items():
        last, base = timings[-1], timings[BASELINE_TURN]
        evaluated = sum(t.prompt_tokens - t.cached_tokens for t in timings)
        print(
            f"{name}: turn #{last.index} / turn #{base.index}: latency {last.latency_ms / base.latency_ms:.2f}x "
            f"({last.latency_ms:.0f} / {base.latency_ms:.0f} ms), time to first token "
            f"{last.first_token_ms / base.first_token_ms:.2f}x ({last.first_token_ms:.0f} / {base.first_token_ms:.0f} ms)"
        )
        print(
            f"{' ' * len(name)}  totals: {sum(t.latency_ms for t in timings) / 1000:.1f} s, time to first token "
            f"{sum(t.first_token_ms for t in timings) / 1000:.1f} s, prompt tokens {sum(t.prompt_tokens for t in timings)} "
            f"of which re-read {evaluated}, generated {sum(t.completion_tokens for t in timings)}"
        )
        if len(timings) >= BASELINE_TURN + 2 * WINDOW:
            late = mean(t.first_token_ms for t in timings[-WINDOW:])
            early = mean(t.first_token_ms for t in timings[BASELINE_TURN:BASELINE_TURN + WINDOW])
            print(f"{' ' * len(name)}  time to first token, mean of the last {WINDOW} turns / mean of turns "
                  f"#{BASELINE_TURN}-#{BASELINE_TURN + WINDOW - 1}: {late / early:.2f}x ({late:.0f} / {early:.0f} ms)")
    timings = modes["per-agent cache"]
    for label, field in (("latency", "latency_ms"), ("time-to-first-token", "first_token_ms")):
        ratio = getattr(timings[-1], field) / getattr(timings[BASELINE_TURN], field)
        verdict = "meets" if ratio <= PER_AGENT_TARGET else "misses"
        print(f"per-agent {label} ratio {ratio:.3f}x {verdict} the target of <= {PER_AGENT_TARGET}x")


def main(argv: list[str] | None = None) -> None:
    options = arguments(argv)
    scenario, characters, views = episode_setup(options.scenario)
    print(
        f"model {options.model}, scenario {scenario.codename}, {characters[0].name} and {characters[1].name}, "
        f"{options.turns} turns, max {options.max_tokens} tokens a turn, seed {options.seed}, "
        f"{options.threads} threads; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    episodes = {"per-agent cache": EpisodePlay(per_agent(options.model, options.seed, options.threads),
                                               characters, views, options.max_tokens)}
    if parse_model_name(options.model).kind in LLAMA_KINDS:
        episodes["one shared Llama"] = EpisodePlay(shared(options.model, options.seed, options.threads),
                                                   characters, views, options.max_tokens)
    else:
        print("(the shared-context mode needs a llama.cpp model; only the per-agent run is shown)")
    started = time.perf_counter()
    try:
        modes = play_interleaved(episodes, options.turns)
    finally:
        for episode in episodes.values():
            episode.close()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"played in {time.perf_counter() - started:.0f} s; load average now {load} on {os.cpu_count()} cores")
    print()
    print_table(modes)
    print_summary(modes)


if __name__ == "__main__":
    main()
