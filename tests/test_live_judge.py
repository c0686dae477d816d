"""The live judge: an append-only prompt, scores only, its own thread and model, never a backlog.

Replay-style backends make the engine tests deterministic: the judge and the agents below
answer from scripts, and the interleaving is forced with events, not sleeps. The slow tests
share one episode played by the real embedded model as agents and judge: each live call reads
few prompt tokens afresh (as many at turn 9 as at turn 1) and every turn is scored or named as
skipped; and every turn's score arrives before the turn after next starts, which holds on a
quiet machine but depends on timing (marked xfail, not strict, with the reason).
"""

from __future__ import annotations

import json
import threading

import pytest

from sotopia_pi.backends import BackendError, Completion
from sotopia_pi.backends.replay import ReplayBackend
from sotopia_pi.episode import ActionType, AgentAction, EpisodeStatus, Evaluation, Turn
from sotopia_pi.judge import (
    LIVE_KEY,
    Judge,
    LiveEvaluator,
    judge_messages,
    live_messages,
    live_schema,
    load_dimension_set,
    parse_live_scores,
    streamed_turn,
    warm_up_messages,
)
from sotopia_pi.prompts import parse_action, partial_argument
from sotopia_pi.runner import EpisodeRunner, EpisodeSetup, RunnerEvents, new_episode
from sotopia_pi.store import Store

from .factories import GOOD_SCORES, action, bike_scenario, judge_answer, seed_store, two_characters

WAIT_S = 30  # generous: a deadlock shows as a timeout, never as a slow pass
DIMENSIONS = load_dimension_set("sotopia")
LOW_SCORES = {d.name: d.low for d in DIMENSIONS.dimensions}


def live_answer(first: dict[str, int] = GOOD_SCORES, second: dict[str, int] = LOW_SCORES) -> str:
    order = [d.name for d in DIMENSIONS.dimensions]
    return json.dumps({LIVE_KEY: [[first[name] for name in order], [second[name] for name in order]]})


def spoken(index: int, text: str | None = None) -> Turn:
    return Turn(
        episode_id="e",
        index=index,
        agent=index % 2,
        action_type=ActionType.speak,
        argument=text if text is not None else f"Line number {index}, about the bike.",
    )


class ScriptedJudge:
    """A judge backend that answers live calls and terminal calls from the schema it is given,
    records every call, and can be held at a gate (to make the judge fall behind on purpose)."""

    def __init__(self, *, prompt_tokens: int = 0, cached_tokens: int = 0) -> None:
        self.name = "scripted-judge"
        self.calls: list[dict] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self._usage = (prompt_tokens, cached_tokens)

    def complete(self, messages, *, schema=None, max_tokens=256, temperature=0.7, on_token=None, cancel=None):
        self.calls.append({"messages": list(messages), "schema": schema, "max_tokens": max_tokens})
        self.entered.set()
        if not self.gate.wait(WAIT_S):
            raise BackendError("the test never opened the judge's gate")
        live = schema is not None and LIVE_KEY in schema["properties"]
        text = live_answer() if live else judge_answer()
        return Completion(text=text, prompt_tokens=self._usage[0], cached_tokens=self._usage[1], finish_reason="stop")

    def close(self) -> None:
        pass


# -- the prompt only grows ------------------------------------------------------------------


def test_live_prompt_only_grows_and_shares_its_opening_with_the_terminal_prompt():
    characters = two_characters()
    turns = [spoken(0), Turn(episode_id="e", index=1, agent=1, action_type=ActionType.none), spoken(2), spoken(3)]
    prompts = [live_messages(bike_scenario(), characters, turns[: k + 1], DIMENSIONS) for k in range(len(turns))]
    task_start = [p[-1].content.rindex("\n\nScores after Turn #") for p in prompts]
    for earlier, later, cut in zip(prompts, prompts[1:], task_start):
        assert later[0] == earlier[0]  # the system message never changes
        assert later[-1].content.startswith(earlier[-1].content[:cut])  # only the task is re-read
    assert prompts[-1][-1].content.endswith("Scores after Turn #3?")
    opening = warm_up_messages(bike_scenario(), characters, DIMENSIONS)
    assert prompts[0][-1].content.startswith(opening[-1].content)
    terminal = judge_messages(bike_scenario(), characters, turns, 1, DIMENSIONS)
    assert terminal[0] == prompts[-1][0]
    assert terminal[-1].content.startswith(prompts[-1][-1].content[: task_start[-1]])
    assert "Score Tomas Reyes only" in terminal[-1].content


def test_the_rubric_and_the_live_format_come_before_the_transcript():
    text = live_messages(bike_scenario(), two_characters(), [spoken(0)], DIMENSIONS)[-1].content
    transcript = text.index('Turn #0: Ines Varga said: "Line number 0')
    assert text.index("7. goal (integer from 0 to 10)") < transcript
    assert text.index('{"scores":[[b,r,k,s,s,f,g],[b,r,k,s,s,f,g]]}') < transcript
    assert text.index("Ines Varga's first") < transcript
    assert "He already bought a car" in text  # the judge sees both secrets


# -- scores only ----------------------------------------------------------------------------


def test_live_schema_enumerates_each_dimensions_integers_in_order_and_asks_for_no_reason():
    schema = live_schema(DIMENSIONS)
    sides = schema["properties"][LIVE_KEY]["prefixItems"]
    assert len(sides) == 2 and schema["properties"][LIVE_KEY]["items"] is False
    for side in sides:
        assert [item["enum"] for item in side["prefixItems"]] == [
            list(range(d.low, d.high + 1)) for d in DIMENSIONS.dimensions
        ]
        assert side["items"] is False
    assert "reasoning" not in json.dumps(schema)


def test_parse_live_scores_checks_every_score_and_never_makes_one_up():
    first, second = parse_live_scores(live_answer(), DIMENSIONS)
    assert first.ok and {k: s.score for k, s in first.scores.items()} == GOOD_SCORES
    assert second.ok and second.scores["secret"].score == -10 and second.scores["goal"].score == 0
    assert first.overall == pytest.approx(sum(GOOD_SCORES.values()) / 7)
    assert all(score.reasoning == "" for score in first.scores.values())

    out_of_range = json.loads(live_answer())
    out_of_range[LIVE_KEY][1][0] = 11  # believability is 0..10
    good, bad = parse_live_scores(json.dumps(out_of_range), DIMENSIONS)
    assert good.ok and "believability: score 11 is outside 0..10" in bad.failure

    short = json.loads(live_answer())
    short[LIVE_KEY][0] = short[LIVE_KEY][0][:6]
    assert parse_live_scores(json.dumps(short), DIMENSIONS)[0].failure == "live judge gave 6 scores, not 7"

    by_name = {LIVE_KEY: [GOOD_SCORES, LOW_SCORES]}  # a server that took no schema
    assert all(side.ok for side in parse_live_scores(json.dumps(by_name), DIMENSIONS))

    for junk in ("", "no scores today", '{"scores": [[1, 2]]}', '{"other": 1}'):
        sides = parse_live_scores(junk, DIMENSIONS)
        assert [side.ok for side in sides] == [False, False]
        assert "not two lists of scores" in sides[0].failure


def test_one_short_call_scores_both_sides_and_counts_the_tokens_read_afresh():
    backend = ScriptedJudge(prompt_tokens=900, cached_tokens=860)
    judge = Judge(backend, DIMENSIONS)
    evaluation = judge.evaluate_live("e", bike_scenario(), two_characters(), [spoken(0), spoken(1)], skipped_turns=[0])
    assert len(backend.calls) == 1
    call = backend.calls[0]
    assert call["schema"] == live_schema(DIMENSIONS)
    assert call["max_tokens"] < 100  # integers only: a tenth of the terminal evaluation's budget
    assert evaluation.kind == "provisional" and evaluation.after_turn == 1 and evaluation.ok
    assert evaluation.agents[0].scores["goal"].score == GOOD_SCORES["goal"]
    assert evaluation.agents[1].scores["goal"].score == 0
    assert evaluation.skipped_turns == [0]
    assert (evaluation.prompt_tokens, evaluation.cached_tokens) == (900, 860)

    terminal = judge.evaluate("e", bike_scenario(), two_characters(), [spoken(0), spoken(1)], kind="terminal")
    assert len(backend.calls) == 3  # one call per side, with reasons
    assert all(score.reasoning for score in terminal.agents[0].scores.values())
    assert terminal.prompt_tokens == 1800 and terminal.skipped_turns == []


class FillingJudge(ScriptedJudge):
    """A scripted judge that can also fill a template: each blank gets its last allowed string."""

    def fill_choices(self, messages, template, *, guess=None, cancel=None):
        self.calls.append({"messages": list(messages), "template": list(template), "guess": guess})
        text = "".join(part if isinstance(part, str) else part[-1] for part in template)
        return Completion(text=text, prompt_tokens=700, cached_tokens=650, finish_reason="stop")


def test_a_judge_that_can_fill_a_template_chooses_each_live_score_among_its_allowed_integers():
    backend = FillingJudge()
    judge = Judge(backend, DIMENSIONS)
    evaluation = judge.evaluate_live("e", bike_scenario(), two_characters(), [spoken(0)])
    (call,) = backend.calls
    blanks = [part for part in call["template"] if not isinstance(part, str)]
    allowed = [[str(value) for value in range(d.low, d.high + 1)] for d in DIMENSIONS.dimensions]
    assert blanks == allowed * 2  # both sides, in the rubric's order, every allowed integer
    assert call["messages"] == live_messages(bike_scenario(), two_characters(), [spoken(0)], DIMENSIONS)
    assert evaluation.ok and (evaluation.prompt_tokens, evaluation.cached_tokens) == (700, 650)
    assert [agent.scores["secret"].score for agent in evaluation.agents] == [0, 0]  # -10..0: last is 0
    assert [agent.scores["goal"].score for agent in evaluation.agents] == [10, 10]
    assert call["guess"] is None
    judge.evaluate_live("e", bike_scenario(), two_characters(), [spoken(0), spoken(1)])
    assert backend.calls[1]["guess"] == [blank[-1] for blank in blanks]  # the last scores, checked first

    sampling = FillingJudge()  # a judge that samples (temperature > 0) generates under the schema
    Judge(sampling, DIMENSIONS, temperature=0.7).evaluate_live("e", bike_scenario(), two_characters(), [spoken(0)])
    assert sampling.calls[0]["schema"] == live_schema(DIMENSIONS)


def test_a_live_answer_cut_off_or_a_failing_judge_is_a_failure():
    cut = ReplayBackend(['{"scores":[[1,2,3'], "cut")
    cut.complete = _with_finish(cut.complete, "length")
    evaluation = Judge(cut, DIMENSIONS).evaluate_live("e", bike_scenario(), two_characters(), [spoken(0)])
    assert [agent.failure for agent in evaluation.agents] == ["live judge output was cut off at 86 tokens"] * 2

    empty = ReplayBackend([], "empty")
    evaluation = Judge(empty, DIMENSIONS).evaluate_live("e", bike_scenario(), two_characters(), [spoken(0)])
    assert not evaluation.ok and "no more canned outputs" in evaluation.agents[0].failure


def _with_finish(complete, reason: str):
    def wrapped(*args, **kwargs):
        return complete(*args, **kwargs).model_copy(update={"finish_reason": reason})

    return wrapped


# -- its own thread; the newest turn, never a backlog ------------------------------------------


def collect():
    """A result list, the condition that announces each result, and the callback that adds one."""
    results: list[Evaluation] = []
    arrived = threading.Condition()

    def on_result(evaluation: Evaluation) -> None:
        with arrived:
            results.append(evaluation)
            arrived.notify_all()

    return results, arrived, on_result


def wait_for(results, arrived, count: int) -> None:
    with arrived:
        assert arrived.wait_for(lambda: len(results) >= count, WAIT_S), f"{len(results)} of {count} results"


def test_a_judge_that_falls_behind_scores_the_newest_turn_and_names_the_turns_it_skipped():
    backend = ScriptedJudge()
    backend.gate.clear()
    results, arrived, on_result = collect()
    live = LiveEvaluator(Judge(backend, DIMENSIONS), "e", bike_scenario(), two_characters(), on_result)
    turns = [spoken(i) for i in range(5)]
    live.request(turns[:1])
    assert backend.entered.wait(WAIT_S)  # the judge is busy with turn 0 ...
    for k in (2, 3, 4):
        live.request(turns[:k])  # ... while turns 1, 2 and 3 are played
    backend.gate.set()
    wait_for(results, arrived, 2)
    live.request(turns[:5])
    wait_for(results, arrived, 3)
    live.close()
    assert [(e.after_turn, e.skipped_turns) for e in results] == [(0, []), (3, [1, 2]), (4, [])]
    assert len(backend.calls) == 3  # no backlog: turns 1 and 2 were never asked for
    assert live.coalesced == 2 and live.skipped == 2
    last_prompt = backend.calls[1]["messages"][-1].content
    assert "Turn #3" in last_prompt and last_prompt.endswith("after Turn #3?")


def test_close_with_finish_scores_the_waiting_turn_and_close_without_drops_it():
    for finish, expected in ((True, [0, 2]), (False, [0])):
        backend = ScriptedJudge()
        backend.gate.clear()
        results, arrived, on_result = collect()
        live = LiveEvaluator(Judge(backend, DIMENSIONS), "e", bike_scenario(), two_characters(), on_result)
        turns = [spoken(i) for i in range(3)]
        live.request(turns[:1])
        assert backend.entered.wait(WAIT_S)
        live.request(turns)
        backend.gate.set()
        live.close(finish=finish, cancel_running=False, timeout=WAIT_S)
        assert [e.after_turn for e in results] == expected


class ReadingJudge(ScriptedJudge):
    """A scripted judge with a KV cache to read ahead into: records each read-ahead, and holds
    in it while `read_gate` is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []
        self.read_gate = threading.Event()
        self.read_gate.set()
        self.read = threading.Condition()

    def read_ahead(self, messages, *, cancel=None):
        with self.read:
            self.reads.append(messages[-1].content)
            self.read.notify_all()
        if not self.read_gate.wait(WAIT_S):
            raise BackendError("the test never opened the read gate")
        return Completion(text="")


STREAMED = action("speak", "It rides well, I'll give you that. Would you take 1,100 in cash today, or more?")


def test_while_a_turn_is_written_the_judge_reads_it_ahead_and_scores_before_reading_more():
    backend = ReadingJudge()
    backend.read_gate.clear()
    results, arrived, on_result = collect()
    live = LiveEvaluator(Judge(backend, DIMENSIONS), "e", bike_scenario(), two_characters(), on_result)
    first = [spoken(0)]
    for end in range(8, len(STREAMED), 8):
        live.turn_streaming(first, 1, 1, STREAMED[:end])
        if end == 64:  # the first read-ahead is due: the judge holds in it while the rest streams
            with backend.read:
                assert backend.read.wait_for(lambda: backend.reads, WAIT_S)
    final = spoken(1, parse_action(STREAMED)[0].argument)
    live.request([*first, final])  # the turn is committed: scoring it comes before any reading
    backend.read_gate.set()
    wait_for(results, arrived, 1)
    live.close(timeout=WAIT_S)
    (read,) = backend.reads
    assert read.endswith(f'Turn #1: Tomas Reyes said: "{partial_argument(STREAMED[:64])}"')
    assert "It rides well" in read
    (call,) = backend.calls
    assert call["messages"][-1].content.startswith(read.removesuffix('"'))  # only the rest is new
    assert results[0].after_turn == 1 and live.read_aheads == 1


def test_a_judge_without_a_cache_to_read_into_is_asked_once_and_then_left_alone():
    backend = ScriptedJudge()
    judge = Judge(backend, DIMENSIONS)
    assert not judge.read_ahead(bike_scenario(), two_characters(), [spoken(0)])
    results, arrived, on_result = collect()
    live = LiveEvaluator(judge, "e", bike_scenario(), two_characters(), on_result)
    live.turn_streaming([spoken(0)], 1, 1, STREAMED)
    live.request([spoken(0), spoken(1)])
    wait_for(results, arrived, 1)
    live.turn_streaming([spoken(0), spoken(1)], 2, 0, STREAMED)  # ignored from now on
    live.close(timeout=WAIT_S)
    assert len(backend.calls) == 1 and live.read_aheads == 0


def test_only_a_shown_action_with_some_argument_is_read_ahead():
    assert streamed_turn("e", 3, 1, '{"action_type": "spe') is None
    assert streamed_turn("e", 3, 1, '{"action_type": "speak", "argument": "') is None
    assert streamed_turn("e", 3, 1, '{"action_type": "leave", "argument": "bye') is None
    turn = streamed_turn("e", 3, 1, '{"action_type": "non-verbal communication", "argument": "nods sl')
    assert (turn.index, turn.agent, turn.action_type, turn.argument) == (3, 1, ActionType.non_verbal, "nods sl")


class PacedAgent:
    """An agent backend that plays its script, but only once the live score of the turn before
    has arrived (a test of order, not of speed): the episode cannot go on if the judge waits."""

    def __init__(self, lines: list[str], scored: threading.Condition, scored_turns: set[int], gate=None) -> None:
        self.name = "paced"
        self._lines = iter(lines)
        self._scored = scored
        self._scored_turns = scored_turns
        self.gate = gate

    def complete(self, messages, **options):
        previous = self._previous_turn(messages)
        if previous >= 0:
            with self._scored:
                assert self._scored.wait_for(lambda: previous in self._scored_turns, WAIT_S), previous
        return Completion(text=next(self._lines), finish_reason="stop")

    @staticmethod
    def _previous_turn(messages) -> int:
        closing = messages[-1].content
        return int(closing.rsplit("You are at Turn #", 1)[1].split(".", 1)[0]) - 1

    def close(self) -> None:
        pass


class Recorder(RunnerEvents):
    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.scored = threading.Condition()
        self.scored_turns: set[int] = set()

    def turn_committed(self, turn: Turn) -> None:
        self.log.append(("turn", turn.index))

    def evaluation(self, evaluation: Evaluation) -> None:
        self.log.append((evaluation.kind, evaluation.after_turn, tuple(evaluation.skipped_turns)))
        with self.scored:
            self.scored_turns.add(evaluation.after_turn)
            self.scored.notify_all()

    def status_changed(self, episode) -> None:
        self.log.append(("status", episode.status.value))


def live_setup(store: Store, **overrides) -> str:
    seed_store(store)
    values = dict(
        scenario_id="bike-sale",
        agent_ids=("ines", "tomas"),
        agent_models=("replay:a", "replay:b"),
        judge_model="replay:judge",
        live_eval=True,
        max_turns=6,
    )
    values.update(overrides)
    return new_episode(store, EpisodeSetup(**values)).id


def test_every_turn_is_scored_live_while_the_agents_play_and_the_last_before_the_terminal(store: Store):
    events = Recorder()
    talk = [action("speak", f"line {i}") for i in range(3)]
    judge = ScriptedJudge()
    runner = EpisodeRunner(
        store,
        live_setup(store),
        events=events,
        backends={side: PacedAgent(talk, events.scored, events.scored_turns) for side in (0, 1)},
        judge_backend=judge,
    )
    episode = runner.run()
    runner.close()
    assert episode.status == EpisodeStatus.finished
    provisional = [entry for entry in events.log if entry[0] == "provisional"]
    assert provisional == [("provisional", k, ()) for k in range(6)]
    assert events.log[-3:] == [("provisional", 5, ()), ("status", "finished"), ("terminal", 5, ())]
    stored = store.evaluations(episode.id, kind="provisional")
    assert sorted(e.after_turn for e in stored) == list(range(6)) and all(e.ok for e in stored)
    live_calls = [c for c in judge.calls if LIVE_KEY in c["schema"]["properties"]]
    assert len(live_calls) == 6  # no warm-up call: a scripted judge has no KV cache to fill


def test_the_live_judge_never_waits_for_an_agent_that_is_generating(store: Store):
    """Side 1 is still generating (held) when turn 0's live score must arrive: if the judge
    queued behind the agent, neither would ever finish."""
    events = Recorder()
    held = threading.Event()

    class HeldAgent(PacedAgent):
        def complete(self, messages, **options):
            with self._scored:
                assert self._scored.wait_for(lambda: 0 in self._scored_turns, WAIT_S), "no live score for turn 0"
            held.set()
            return Completion(text=action("leave"), finish_reason="stop")

    runner = EpisodeRunner(
        store,
        live_setup(store, max_turns=4),
        events=events,
        backends={
            0: ReplayBackend([action("speak", "Two-fifty, firm.")], "a"),
            1: HeldAgent([], events.scored, events.scored_turns),
        },
        judge_backend=ScriptedJudge(),
    )
    episode = runner.run()
    runner.close()
    assert held.is_set() and episode.end_reason == "Tomas Reyes left the conversation"
    assert [e.after_turn for e in store.evaluations(episode.id, kind="provisional")] == [0, 1]


def test_a_step_leaves_the_live_judge_scoring_and_a_resume_skips_nothing_played_before(store: Store):
    events = Recorder()
    talk = [action("speak", f"line {i}") for i in range(3)]
    runner = EpisodeRunner(
        store,
        live_setup(store),
        events=events,
        backends={0: ReplayBackend(talk, "a"), 1: ReplayBackend(talk, "b")},
        judge_backend=ScriptedJudge(),
    )
    runner.step()
    with events.scored:
        assert events.scored.wait_for(lambda: 0 in events.scored_turns, WAIT_S)
    runner.close()

    events = Recorder()
    resumed = EpisodeRunner(
        store,
        runner.episode.id,
        events=events,
        backends={0: ReplayBackend(talk[1:], "a"), 1: ReplayBackend(talk, "b")},
        judge_backend=ScriptedJudge(),
    )
    resumed.step()
    with events.scored:
        assert events.scored.wait_for(lambda: 1 in events.scored_turns, WAIT_S)
    resumed.close()
    assert [entry for entry in events.log if entry[0] == "provisional"] == [("provisional", 1, ())]


class StreamingAgent:
    """Streams each of its lines as a model would, and stops halfway until the live judge has
    read that turn ahead (the runner must pass the stream on while the turn is played)."""

    def __init__(self, lines: list[str], judge: ReadingJudge) -> None:
        self.name = "streaming"
        self._lines = iter(lines)
        self._judge = judge

    def complete(self, messages, *, on_token=None, **options):
        text = next(self._lines)
        index = PacedAgent._previous_turn(messages) + 1
        for start in range(0, len(text), 8):
            if start == 80:
                with self._judge.read:
                    seen = lambda: any(f"\nTurn #{index}: " in read for read in self._judge.reads)  # noqa: E731
                    assert self._judge.read.wait_for(seen, WAIT_S), f"turn {index} was not read ahead"
            on_token(text[start : start + 8])
        return Completion(text=text, finish_reason="stop")

    def close(self) -> None:
        pass


def test_the_runner_lets_the_live_judge_read_each_turn_while_it_is_played(store: Store):
    lines = {  # four different lines: a repeated one would be asked for again
        0: ["I can do forty for the bike if you throw in the lights", "Cash today, and I carry it down the stairs myself"],
        1: ["Forty is low when the tyres are new and the gears were serviced", "Forty-five and it is yours, with the pump too"],
    }
    judge = ReadingJudge()
    events = Recorder()
    runner = EpisodeRunner(
        store,
        live_setup(store, max_turns=4),
        events=events,
        backends={side: StreamingAgent([action("speak", line) for line in lines[side]], judge) for side in (0, 1)},
        judge_backend=judge,
    )
    episode = runner.run()
    runner.close()
    assert episode.status == EpisodeStatus.finished
    assert [e.after_turn for e in store.evaluations(episode.id, kind="provisional")] == [0, 1, 2, 3]
    for index in range(4):
        read = next(read for read in judge.reads if f"\nTurn #{index}: " in read)
        assert read.rsplit("\n", 1)[1].startswith(f"Turn #{index}: ")  # the turn being played, last
        assert f'said: "{lines[index % 2][index // 2][:20]}' in read  # as far as it had streamed


def test_a_local_judge_is_warmed_with_the_opening_and_the_turns_already_played(store: Store):
    from sotopia_pi.backends import ModelSpec

    talk = [action("speak", f"line {i}") for i in range(3)]
    episode_id = live_setup(store, live_eval=False)  # two turns played without a live judge
    first = EpisodeRunner(store, episode_id, backends={0: ReplayBackend(talk, "a"), 1: ReplayBackend(talk, "b")})
    first.step()
    first.step()
    first.close()
    episode = store.episode(episode_id)
    episode.live_eval = True
    store.save_episode(episode)

    judge = ScriptedJudge()
    judge.spec = ModelSpec(kind="embedded")  # a llama.cpp model: it keeps a KV cache
    events = Recorder()
    resumed = EpisodeRunner(
        store,
        episode_id,
        events=events,
        backends={0: ReplayBackend(talk[1:], "a"), 1: ReplayBackend(talk[1:], "b")},
        judge_backend=judge,
    )
    resumed.step()
    with events.scored:
        assert events.scored.wait_for(lambda: 2 in events.scored_turns, WAIT_S)
    resumed.close()
    warm, live = judge.calls
    assert warm["max_tokens"] == 1 and warm["schema"] is None
    warmed = warm["messages"][-1].content
    assert 'Turn #1: Tomas Reyes said: "line 0"' in warmed and "Turn #2" not in warmed
    assert live["messages"][-1].content.startswith(warmed)
    assert [entry for entry in events.log if entry[0] == "provisional"] == [("provisional", 2, ())]


def test_the_first_turn_waits_until_the_judge_has_read_the_scene(store: Store):
    from sotopia_pi.backends import ModelSpec

    talk = [action("speak", f"line {i}") for i in range(3)]
    judge = ScriptedJudge()
    judge.spec = ModelSpec(kind="embedded")  # keeps a KV cache: the runner warms it up
    judge.gate.clear()  # the warm-up (the judge's first call) is held here
    agent = ReplayBackend(talk, "a")
    runner = EpisodeRunner(
        store, live_setup(store), backends={0: agent, 1: ReplayBackend(talk, "b")}, judge_backend=judge
    )
    stepping = threading.Thread(target=runner.step)
    stepping.start()
    assert judge.entered.wait(WAIT_S) and judge.calls[0]["max_tokens"] == 1
    stepping.join(0.3)
    assert stepping.is_alive() and runner.turns == []  # no turn is played while the judge reads
    judge.gate.set()
    stepping.join(WAIT_S)
    runner.close()
    assert [turn.index for turn in runner.turns] == [0]


# -- the real model ---------------------------------------------------------------------------


class NeverLeaves:
    """The embedded model as an agent, with a leave or an idle turn replaced by a canned line,
    so that the episode plays all its turns."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.spec = backend.spec

    def complete(self, messages, **options):
        completion = self.backend.complete(messages, **options)
        if parse_action(completion.text)[0].action_type not in (ActionType.leave, ActionType.none):
            return completion
        line = AgentAction(action_type=ActionType.speak, argument="Let us keep talking about the price.")
        return completion.model_copy(update={"text": line.to_json()})

    def close(self) -> None:
        self.backend.close()


class Timeline(RunnerEvents):
    """When each turn was committed and, for each live score, the turn being played as it came."""

    def __init__(self) -> None:
        self.committed = -1
        self.lags: dict[int, int] = {}
        self.live: list[Evaluation] = []

    def turn_committed(self, turn: Turn) -> None:
        self.committed = turn.index

    def evaluation(self, evaluation: Evaluation) -> None:
        if evaluation.kind == "provisional":
            # the turn being played when the score arrived, minus the turn scored: 1 = in time
            self.lags[evaluation.after_turn] = self.committed + 1 - evaluation.after_turn
            self.live.append(evaluation)


EMBEDDED_TURNS = 10


@pytest.fixture(scope="module")
def embedded_episode(tmp_path_factory) -> Timeline:
    """One episode of EMBEDDED_TURNS turns, embedded agents and embedded judge, live scoring on."""
    from sotopia_pi.backends import create_backend

    home = tmp_path_factory.mktemp("live-judge-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOTOPIA_PI_HOME", str(home))
        with Store() as store:
            episode_id = live_setup(
                store,
                agent_models=("embedded", "embedded"),
                judge_model="embedded",
                max_turns=EMBEDDED_TURNS,
                stale_limit=0,
            )
            timeline = Timeline()
            agents = {side: NeverLeaves(create_backend("embedded", n_threads=1, seed=side)) for side in (0, 1)}
            runner = EpisodeRunner(store, episode_id, events=timeline, backends=agents)
            try:
                assert runner.run().status == EpisodeStatus.finished
            finally:
                runner.close()
    return timeline


@pytest.mark.slow
def test_embedded_judge_accounts_for_every_turn_reading_few_fresh_tokens(embedded_episode: Timeline):
    live = embedded_episode.live
    assert all(evaluation.ok for evaluation in live), [e.agents for e in live if not e.ok]
    scored = [e.after_turn for e in live]
    skipped = [index for e in live for index in e.skipped_turns]
    assert sorted(scored + skipped) == list(range(EMBEDDED_TURNS))  # scored, or said to be skipped
    assert scored[-1] == EMBEDDED_TURNS - 1  # the last turn is always scored
    fresh = {e.after_turn: e.prompt_tokens - e.cached_tokens for e in live}
    # Flat: a live call reads the new turn(s) and the short task, never the transcript again.
    assert max(fresh.values()) < 150, fresh
    early = [tokens for turn, tokens in fresh.items() if 1 <= turn <= 3]
    late = [tokens for turn, tokens in fresh.items() if turn >= EMBEDDED_TURNS - 3]
    assert sum(late) / len(late) < sum(early) / len(early) + 25, fresh
    assert live[-1].prompt_tokens > live[0].prompt_tokens + 100  # while the prompt itself grew


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason="timing: a live call (0.5-1.0 s on a two-core machine) is close to a short embedded "
    "agent turn (0.9-1.3 s), so a score can miss by a few hundredths of a second, about one turn "
    "in twenty (bench/live_judge.py prints the lags and next-turn times)",
)
def test_embedded_judge_scores_every_turn_before_the_turn_after_next_starts(embedded_episode: Timeline):
    lags = embedded_episode.lags
    assert sorted(lags) == list(range(EMBEDDED_TURNS)), f"turns without a live score: {lags}"
    assert max(lags.values()) <= 1, f"lag in turns per turn: {lags}"
