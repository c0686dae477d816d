"""Does the live judge keep up? Seconds per live evaluation, lag in turns, fresh prompt tokens.

    .venv/bin/python bench/live_judge.py [--turns 20] [--model embedded] [--judge embedded]
        [--scenario used_cargo_bike] [--max-tokens 200] [--seed 7] [--json]

Plays one episode through the real EpisodeRunner with live evaluation on (the runner loads the
judge on its own model instance, with its own threads), in a throw-away home. The agents are the
model given; when one of them leaves or idles, its turn is replaced by a canned, realistic line
(counted in the report) so that every run plays all its turns, as the figures are per turn.

Per live evaluation it prints: the turn scored, the judge's seconds for the call, the seconds
from the turn's commit to its score (the call plus any wait behind the previous call), the lag
(the turn being played when the score arrived, minus the turn scored: 1 = the score of turn k
came while turn k+1 was played, 2 = while turn k+2 was, which misses the target), the prompt
tokens of the call and those read afresh (not from the judge's KV cache), the turns
skipped, and how long the next turn took to play (the time the score has to arrive in for a lag
of 1). Targets: lag at most 1 for every turn, no turn without a live score, fresh tokens flat
in the turn index (slope near 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

CANNED_TURNS = [
    "Before we go on: the battery still holds a full charge for about forty kilometres.",
    "I hear you, but three years is old for a battery. A new one costs real money.",
    "The scratches are only on the box. The frame and the motor are in great shape.",
    "It rides well, I'll give you that. Would you take 1,100 in cash today?",
    "1,100 is too low. I could do 1,400 and throw in the rain cover.",
    "The rain cover comes with it anyway, it's in the listing. 1,150 is my best offer.",
    "Let me think about it. Someone else is coming to look at it tomorrow.",
    "I'm seeing another bike this afternoon, so I'd like to decide now.",
    "What if we meet at 1,300? That's fair for a bike this well kept.",
    "Could you show me the service records for the motor first?",
    "Sure, I have the receipts upstairs. It was serviced last spring.",
    "Good. Would you keep the child seat on it, or do you want it separately?",
]

TARGET_LAG = 1
EPISODE_DEFAULT_MAX_TOKENS = 200  # EpisodeSetup's default: turns as long as in the app


@dataclass
class LiveScore:
    after_turn: int
    seconds: float
    seconds_after_commit: float
    lag: int
    prompt_tokens: int
    fresh_tokens: int
    skipped: list[int]
    ok: bool
    next_turn_seconds: float | None = None


@dataclass
class Report:
    model: str
    judge: str
    turns: int
    canned_turns: int
    agent_seconds_mean: float
    live: list[LiveScore] = field(default_factory=list)
    turns_without_score: list[int] = field(default_factory=list)
    terminal_seconds: float = 0.0

    @property
    def max_lag(self) -> int:
        return max((score.lag for score in self.live), default=-1)

    def fresh_slope(self) -> float:
        """Least-squares slope of fresh prompt tokens against the turn scored (tokens per turn),
        leaving out the first call, which reads the opening if the warm-up has not."""
        points = [(s.after_turn, s.fresh_tokens) for s in self.live[1:]]
        if len(points) < 2:
            return 0.0
        mean_x = sum(x for x, _ in points) / len(points)
        mean_y = sum(y for _, y in points) / len(points)
        spread = sum((x - mean_x) ** 2 for x, _ in points)
        return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


class CannedFallback:
    """An agent backend that plays the model, but puts a canned line in place of a turn that
    would end the episode early (a leave) or leave it idle."""

    def __init__(self, backend, offset: int) -> None:
        self.backend = backend
        self.name = backend.name
        self.spec = getattr(backend, "spec", None)
        self.replaced = 0
        self._next = offset

    def complete(self, messages, **options):
        from sotopia_pi.episode import ActionType, AgentAction
        from sotopia_pi.prompts import parse_action

        completion = self.backend.complete(messages, **options)
        action, _ = parse_action(completion.text)
        if action.action_type not in (ActionType.leave, ActionType.none):
            return completion
        line = CANNED_TURNS[self._next % len(CANNED_TURNS)]
        self._next += 2
        self.replaced += 1
        text = AgentAction(action_type=ActionType.speak, argument=line).to_json()
        return completion.model_copy(update={"text": text})

    def close(self) -> None:
        self.backend.close()


class Timeline:
    """RunnerEvents that note when each turn starts and is committed and when each score lands."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latest_committed = -1
        self.turn_seconds: list[float] = []
        self.started: dict[int, float] = {}
        self.committed_at: dict[int, float] = {}
        self.live: list[LiveScore] = []
        self.terminal_at: float | None = None
        self.finished_at: float | None = None

    def turn_started(self, episode_id, index, agent, by_human) -> None:
        self.started[index] = time.perf_counter()

    def token(self, *args) -> None:
        pass

    def turn_committed(self, turn) -> None:
        with self.lock:
            self.latest_committed = turn.index
            self.committed_at[turn.index] = time.perf_counter()
            self.turn_seconds.append(turn.latency_ms / 1000)

    def evaluation(self, evaluation) -> None:
        if evaluation.kind == "terminal":
            self.terminal_at = time.perf_counter()
            return
        now = time.perf_counter()
        with self.lock:
            playing = self.latest_committed + 1  # the turn being played (or the one after the last)
            since_commit = now - self.committed_at.get(evaluation.after_turn, now)
        self.live.append(
            LiveScore(
                after_turn=evaluation.after_turn,
                seconds=round(evaluation.latency_ms / 1000, 2),
                seconds_after_commit=round(since_commit, 2),
                lag=playing - evaluation.after_turn,
                prompt_tokens=evaluation.prompt_tokens,
                fresh_tokens=evaluation.prompt_tokens - evaluation.cached_tokens,
                skipped=list(evaluation.skipped_turns),
                ok=evaluation.ok,
            )
        )

    def fill_next_turn_seconds(self) -> None:
        for score in self.live:
            following = score.after_turn + 1
            if following in self.started and following in self.committed_at:
                score.next_turn_seconds = round(self.committed_at[following] - self.started[following], 2)

    def status_changed(self, episode) -> None:
        if episode.status == "finished" and self.finished_at is None:
            self.finished_at = time.perf_counter()


def agent_threads() -> int | None:
    """What the runner gives each llama.cpp model when a live judge shares the cores."""
    cores = os.cpu_count() or 2
    return max(1, cores // 2) if cores <= 4 else None


def play(options: argparse.Namespace) -> Report:
    from sotopia_pi.backends import create_backend, parse_model_name
    from sotopia_pi.library import ensure_library, load_library
    from sotopia_pi.runner import LLAMA_KINDS, EpisodeRunner, EpisodeSetup, new_episode
    from sotopia_pi.store import Store

    library = load_library()
    scenario = library.scenario(options.scenario)
    pair = library.valid_pairs(scenario)[0]
    llama = parse_model_name(options.model).kind in LLAMA_KINDS
    agent_options = {"seed": options.seed, **({"n_threads": agent_threads()} if llama and agent_threads() else {})}
    agents = {
        side: CannedFallback(create_backend(options.model, **agent_options), offset=side) for side in (0, 1)
    }
    timeline = Timeline()
    with Store() as store:
        ensure_library(store)
        setup = EpisodeSetup(
            scenario_id=scenario.id,
            agent_ids=pair,
            agent_models=(options.model, options.model),
            judge_model=options.judge,
            max_turns=options.turns,
            live_eval=True,
            stale_limit=0,
            max_tokens=options.max_tokens,
        )
        episode = new_episode(store, setup)
        runner = EpisodeRunner(store, episode.id, events=timeline, backends=dict(agents))
        try:
            runner.load_models()
            runner.run()
        finally:
            runner.close()
        turns = store.turns(episode.id)
        terminal = store.terminal_evaluation(episode.id)
    timeline.fill_next_turn_seconds()
    scored = {score.after_turn for score in timeline.live}
    return Report(
        model=options.model,
        judge=options.judge,
        turns=len(turns),
        canned_turns=sum(agent.replaced for agent in agents.values()),
        agent_seconds_mean=round(sum(timeline.turn_seconds) / max(len(timeline.turn_seconds), 1), 2),
        live=timeline.live,
        turns_without_score=[turn.index for turn in turns if turn.index not in scored],
        terminal_seconds=round(terminal.latency_ms / 1000, 2) if terminal else 0.0,
    )


def print_report(report: Report) -> None:
    print(f"agents {report.model}, judge {report.judge}: {report.turns} turns "
          f"({report.canned_turns} canned), agent turn {report.agent_seconds_mean:.2f} s on average")
    print(f"{'turn':>4} {'judge s':>8} {'after s':>8} {'next s':>7} {'lag':>4} {'prompt':>7} {'fresh':>6}  skipped")
    for score in report.live:
        mark = "" if score.ok else "  (failed)"
        following = "-" if score.next_turn_seconds is None else f"{score.next_turn_seconds:.2f}"
        print(f"{score.after_turn:>4} {score.seconds:>8.2f} {score.seconds_after_commit:>8.2f} {following:>7} "
              f"{score.lag:>4} {score.prompt_tokens:>7} {score.fresh_tokens:>6}  {score.skipped or '-'}{mark}")
    seconds = [score.seconds for score in report.live]
    fresh = [score.fresh_tokens for score in report.live[1:]]
    if seconds:
        print(f"live evaluation: {sum(seconds) / len(seconds):.2f} s mean, {max(seconds):.2f} s max; "
              f"max lag {report.max_lag} turn(s) (target <= {TARGET_LAG})")
    if fresh:
        print(f"fresh prompt tokens per live call after the first: {min(fresh)}..{max(fresh)}, "
              f"slope {report.fresh_slope():+.2f} tokens per turn (target: flat)")
    print(f"turns without a live score: {report.turns_without_score or 'none'}; "
          f"terminal evaluation {report.terminal_seconds:.1f} s")


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--model", default="embedded", help="the agents' model")
    parser.add_argument("--judge", default="embedded", help="the judge's model")
    parser.add_argument("--scenario", default="used_cargo_bike", help="codename in the built-in library")
    parser.add_argument("--max-tokens", type=int, default=EPISODE_DEFAULT_MAX_TOKENS, help="cap on each agent turn")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = arguments(argv)
    with tempfile.TemporaryDirectory(prefix="live-judge-bench-") as home:
        os.environ["SOTOPIA_PI_HOME"] = str(Path(home))
        report = play(options)
    if options.json:
        document = asdict(report) | {"max_lag": report.max_lag, "fresh_slope": report.fresh_slope()}
        print(json.dumps(document, indent=2))
    else:
        print_report(report)
    within = report.max_lag <= TARGET_LAG and not report.turns_without_score
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
