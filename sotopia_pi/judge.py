"""The judge: SOTOPIA-EVAL's seven dimensions (or any custom set) scored per agent.

The judge sees everything (both profiles with secrets, both goals) and the whole transcript.
Each agent is scored in one call whose JSON schema enumerates the allowed integers of every
dimension, so a score out of range cannot come back even from a model that ignores
minimum/maximum. Anything that still goes wrong is stored as a failure with its reason, never
as a score.

Live evaluation runs in its own thread beside the conversation, on the judge's own backend.
A live call asks for the integers only, both sides at once (`live_messages`, `live_schema`);
the reasons are written once, by the terminal evaluation. Every judge prompt of an episode
starts with the same opening and a transcript that only grows (`judge_context`), so a judge
with a KV cache re-reads just the newest turn and a short task on each live call. When turns
arrive faster than the judge can score them, pending requests collapse into the newest one and
the evaluation names the turns it skipped (`Evaluation.skipped_turns`). A backend that can fill
a template's blanks (`ChoiceFilling`: llama.cpp) answers a live call as `live_template`, each
integer chosen among its allowed ones instead of generated under a grammar.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from . import paths
from .backends import BackendError, Cancelled, ChatBackend, Completion
from .backends.base import ChoiceFilling, PromptReading
from .episode import ActionType, AgentEvaluation, ChatMessage, DimensionScore, Evaluation, Turn, overall_score
from .errors import SotopiaError
from .model_text import clean_text, read_json_object
from .profiles import Character, Scenario
from .prompts import history_lines, load_json_object, partial_argument
from .score_head import PromptStates, ScoreHead, ScoreHeadError
from .visibility import judge_view

REASONING_MAX_CHARS = 160

log = logging.getLogger(__name__)


class Dimension(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    low: int
    high: int

    @model_validator(mode="after")
    def _range(self) -> Dimension:
        if self.low >= self.high:
            raise ValueError(f"dimension {self.name}: low ({self.low}) must be below high ({self.high})")
        return self


class DimensionSet(BaseModel):
    name: str
    description: str = ""
    dimensions: list[Dimension] = Field(min_length=1, alias="dimension")

    model_config = {"populate_by_name": True}

    @model_validator(mode="after")
    def _unique(self) -> DimensionSet:
        names = [d.name for d in self.dimensions]
        if len(names) != len(set(names)):
            raise ValueError(f"dimension set {self.name}: duplicate dimension names")
        return self

    def by_name(self) -> dict[str, Dimension]:
        return {d.name: d for d in self.dimensions}


class DimensionSetError(SotopiaError, ValueError):
    pass


def dimension_set_dirs() -> list[Path]:
    """Built-in sets first, then the user's own (which may override a built-in by name)."""
    return [paths.library_dir() / "dimensions", paths.home() / "dimensions"]


def load_dimension_set(name_or_path: str = "sotopia") -> DimensionSet:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.is_file():
        files = [candidate]
    else:
        files = [d / f"{name_or_path}.toml" for d in reversed(dimension_set_dirs())]
    for file in files:
        if file.is_file():
            try:
                return DimensionSet.model_validate(tomllib.loads(file.read_text(encoding="utf-8-sig")))
            except (tomllib.TOMLDecodeError, ValidationError) as error:
                raise DimensionSetError(f"{file}: {error}") from error
            except UnicodeDecodeError as error:
                raise DimensionSetError(f"{file}: not UTF-8 text (byte {error.start}: {error.reason})") from None
            except (ValueError, RecursionError, OSError) as error:  # huge integers, deep nesting
                raise DimensionSetError(f"{file}: cannot read: {type(error).__name__}: {str(error)[:160]}") from None
    known = sorted({f.stem for d in dimension_set_dirs() if d.is_dir() for f in d.glob("*.toml")})
    raise DimensionSetError(f"no dimension set {name_or_path!r}; known: {', '.join(known)}")


def evaluation_schema(dimensions: DimensionSet) -> dict:
    properties = {
        d.name: {
            "type": "object",
            "properties": {
                "reasoning": {"type": "string", "maxLength": REASONING_MAX_CHARS},
                "score": {"type": "integer", "enum": list(range(d.low, d.high + 1))},
            },
            "required": ["reasoning", "score"],
        }
        for d in dimensions.dimensions
    }
    return {"type": "object", "properties": properties, "required": list(properties)}


JUDGE_SYSTEM = (
    "You are an impartial expert judge of social interactions. You read a role-played "
    "conversation together with everything the participants know privately (their "
    "backgrounds, secrets and goals), and you score the participants fairly and strictly, "
    "using the whole range of each scale."
)
TRANSCRIPT_HEADER = "What happened:"
NOTHING_HAPPENED = "(no one did anything)"


def rubric_lines(dimensions: DimensionSet) -> str:
    """The dimensions, numbered: a live answer lists its scores in this order."""
    return "\n".join(
        f"{number}. {d.name} (integer from {d.low} to {d.high}): {d.description}"
        for number, d in enumerate(dimensions.dimensions, start=1)
    )


def judge_context(
    scenario: Scenario, characters: tuple[Character, Character], turns: Sequence[Turn], dimensions: DimensionSet
) -> str:
    """The opening every judge prompt of an episode shares, live or terminal: the interaction,
    the rubric and the live answer's format (fixed for the episode), then the transcript, which
    only grows. A judge backend that keeps its KV cache (llama.cpp) therefore reads the fixed
    part once per episode and, on each later call, only the turns added since and the short
    task that follows (`live_task`, or the terminal request of `judge_messages`)."""
    names = (characters[0].name, characters[1].name)
    transcript = "\n".join(history_lines(turns, names)) or NOTHING_HAPPENED
    return (
        f"The interaction:\n{judge_view(scenario, characters).render()}\n\n"
        f"The dimensions you score, each an integer inside its range:\n{rubric_lines(dimensions)}\n\n"
        f"{live_format(characters, dimensions)}\n\n"
        f"{TRANSCRIPT_HEADER}\n{transcript}"
    )


def judge_messages(
    scenario: Scenario,
    characters: tuple[Character, Character],
    turns: Sequence[Turn],
    agent: int,
    dimensions: DimensionSet,
) -> list[ChatMessage]:
    """The terminal (full) evaluation of one agent: a reason and a score per dimension."""
    name = characters[agent].name
    user = (
        f"{judge_context(scenario, characters, turns, dimensions)}\n\n"
        f"The conversation is over. Score {name} only. For every dimension above, first give a "
        "one-sentence reason, then an integer score inside its range. Answer with one JSON object "
        'whose keys are the dimension names, each holding {"reasoning": "...", "score": N}.'
    )
    return [ChatMessage(role="system", content=JUDGE_SYSTEM), ChatMessage(role="user", content=user)]


LIVE_KEY = "scores"


def live_schema(dimensions: DimensionSet) -> dict:
    """A live answer: {"scores": [[N, ...], [N, ...]]}, the first person's integers then the
    second's, each list in the rubric's order and each position enumerating its dimension's
    allowed integers. Lists, not objects keyed by dimension or by name: the keys would be most
    of the tokens to generate, and generating is what a live call spends its time on."""
    side = {
        "type": "array",
        "prefixItems": [{"type": "integer", "enum": list(range(d.low, d.high + 1))} for d in dimensions.dimensions],
        "items": False,
    }
    both = {"type": "array", "prefixItems": [side, side], "items": False}
    return {"type": "object", "properties": {LIVE_KEY: both}, "required": [LIVE_KEY]}


def live_template(dimensions: DimensionSet) -> list[str | list[str]]:
    """`live_schema`'s answer as a template for `ChoiceFilling.fill_choices`: the brackets and
    commas as they are, each score a blank of its dimension's allowed integers."""
    blanks = [[str(value) for value in range(d.low, d.high + 1)] for d in dimensions.dimensions]
    template: list[str | list[str]] = [f'{{"{LIVE_KEY}":[[']
    for closing in ("],[", "]]}"):
        for position, blank in enumerate(blanks):
            template += [",", blank] if position else [blank]
        template.append(closing)
    return template


def live_format(characters: tuple[Character, Character], dimensions: DimensionSet) -> str:
    """How a live answer looks, said once in the shared opening (so it is read once per episode).
    Its example has no spaces and no digits: a small model copies the layout (on SmolLM2's
    tokenizer each space is a token to generate: 35 tokens instead of 48 for the sotopia set)
    without anchoring on numbers."""
    letters = ",".join(d.name[0] for d in dimensions.dimensions)
    return (
        "While the conversation goes on, you are asked for the scores so far: answer with "
        f'{{"{LIVE_KEY}":[[{letters}],[{letters}]]}}, {len(dimensions.dimensions)} integers per '
        f"person in the numbered order, {characters[0].name}'s first, {characters[1].name}'s "
        "second, and no reasons."
    )


def live_task(after_turn: int) -> str:
    """The request that ends a live prompt: short, since every live call re-reads it."""
    return f"Scores after Turn #{after_turn}?"


def live_messages(
    scenario: Scenario,
    characters: tuple[Character, Character],
    turns: Sequence[Turn],
    dimensions: DimensionSet,
) -> list[ChatMessage]:
    """A live (provisional) evaluation after the newest of `turns`: scores only, no reasons, both
    sides in one answer. The prompt is `judge_context` plus `live_task`, so from one live call to
    the next it only grows by the new turns (and the task's turn number changes)."""
    after = turns[-1].index if turns else -1
    user = f"{judge_context(scenario, characters, turns, dimensions)}\n\n{live_task(after)}"
    return [ChatMessage(role="system", content=JUDGE_SYSTEM), ChatMessage(role="user", content=user)]


def warm_up_messages(
    scenario: Scenario,
    characters: tuple[Character, Character],
    dimensions: DimensionSet,
    played: Sequence[Turn] = (),
) -> list[ChatMessage]:
    """The shared opening with the turns already played (none: just the transcript header), no
    task: what the judge's KV cache can hold before the next turn is played."""
    user = judge_context(scenario, characters, played, dimensions).removesuffix(NOTHING_HAPPENED)
    return [ChatMessage(role="system", content=JUDGE_SYSTEM), ChatMessage(role="user", content=user)]


_STREAMED_ACTION_TYPE = re.compile(r'"action_type"\s*:\s*"([^"]*)"')
_SHOWN_ACTIONS = {ActionType.speak, ActionType.non_verbal, ActionType.action}


def streamed_turn(episode_id: str, index: int, agent: int, streamed: str) -> Turn | None:
    """A turn as its model has written it so far (a JSON action, cut anywhere), for the judge to
    read ahead; None until its action type and some of an argument that the transcript shows
    are there."""
    match = _STREAMED_ACTION_TYPE.search(streamed)
    if match is None or match.group(1) not in {kind.value for kind in _SHOWN_ACTIONS}:
        return None
    argument = partial_argument(streamed).strip()
    if not argument:
        return None
    return Turn(episode_id=episode_id, index=index, agent=agent, action_type=ActionType(match.group(1)), argument=argument)


def parse_agent_evaluation(text: str, dimensions: DimensionSet) -> AgentEvaluation:
    """Scores from a judge's answer, or a failure naming what was wrong. Never a made-up score,
    and never an exception, whatever the text."""
    read = read_json_object(text)
    data = read.value
    if data is None:
        return AgentEvaluation(failure=f"judge output is not JSON ({read.problem}): {clean_text(text[:120])!r}")
    try:
        return _scores_from(data, dimensions)
    except (ValueError, TypeError, RecursionError) as error:  # a shape no check above foresaw
        return AgentEvaluation(failure=f"judge output could not be read: {type(error).__name__}")


def _scores_from(data: dict, dimensions: DimensionSet) -> AgentEvaluation:
    scores: dict[str, DimensionScore] = {}
    for dim in dimensions.dimensions:
        entry = data.get(dim.name)
        if isinstance(entry, list) and len(entry) == 2:  # SOTOPIA's old [reasoning, score] form
            entry = {"reasoning": entry[0], "score": entry[1]}
        if not isinstance(entry, dict) or "score" not in entry:
            return AgentEvaluation(failure=f"judge gave no score for {dim.name}")
        raw = entry["score"]
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            return AgentEvaluation(failure=f"{dim.name}: score {raw!r} is not an integer")
        try:
            score = int(str(raw).strip())
        except ValueError:
            return AgentEvaluation(failure=f"{dim.name}: score {raw!r} is not an integer")
        if not dim.low <= score <= dim.high:
            return AgentEvaluation(
                failure=f"{dim.name}: score {score} is outside {dim.low}..{dim.high}"
            )
        scores[dim.name] = DimensionScore(score=score, reasoning=clean_text(str(entry.get("reasoning", ""))))
    return AgentEvaluation(scores=scores, overall=overall_score(scores))


def parse_live_scores(text: str, dimensions: DimensionSet) -> list[AgentEvaluation]:
    """Both sides' scores from a live answer (`live_schema`; a side may also come as
    {dimension: N}, from a server that took no schema), each checked as the terminal scores
    are. A side that cannot be read is a failure, never a made-up score."""
    data = load_json_object(text)
    sides = data.get(LIVE_KEY) if data is not None else None
    if not isinstance(sides, list) or len(sides) != 2:
        failure = AgentEvaluation(failure=f"live judge output is not two lists of scores: {text[:120]!r}")
        return [failure, failure]
    return [_live_side(entry, dimensions) for entry in sides]


def _live_side(entry: object, dimensions: DimensionSet) -> AgentEvaluation:
    names = [d.name for d in dimensions.dimensions]
    if isinstance(entry, list):
        if len(entry) != len(names):
            return AgentEvaluation(failure=f"live judge gave {len(entry)} scores, not {len(names)}")
        entry = dict(zip(names, entry))
    if not isinstance(entry, dict):
        return AgentEvaluation(failure=f"live judge gave no list of scores: {str(entry)[:40]!r}")
    try:
        as_terminal = json.dumps({name: {"score": value} for name, value in entry.items()})
    except (TypeError, ValueError, RecursionError) as error:
        return AgentEvaluation(failure=f"live judge scores could not be read: {type(error).__name__}")
    return parse_agent_evaluation(as_terminal, dimensions)


# A llama.cpp judge samples without a repeat penalty: a penalty on recent tokens would push each
# score away from the digits the judge has just written for the other dimensions.
JUDGE_SAMPLING = {"repeat_penalty": 1.0}


class Judge:
    """Scores episodes on one backend. Give it a backend of its own (the runner loads one per
    episode): then a live evaluation never waits behind an agent's generation, and the judge's
    KV cache holds the judge's own prompt from one call to the next."""

    def __init__(
        self,
        backend: ChatBackend,
        dimensions: DimensionSet | None = None,
        *,
        max_tokens: int = 1400,
        temperature: float = 0.0,
        model_name: str | None = None,
        score_head: ScoreHead | None = None,
    ):
        self.backend = backend
        # The name evaluations record: the model as the episode names it (a shipped adapter by
        # its name), where the backend's own name spells out the adapter file it loaded.
        self.model_name = model_name
        self.dimensions = dimensions or load_dimension_set("sotopia")
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._schema = evaluation_schema(self.dimensions)
        self._live_schema = live_schema(self.dimensions)
        self._live_template = live_template(self.dimensions)
        self._live_guess: list[str] | None = None  # the last live scores, as a template's blanks
        self.score_head = score_head if score_head is not None and self._head_fits(score_head) else None

    def _head_fits(self, head: ScoreHead) -> bool:
        names = {d.name for d in self.dimensions.dimensions}
        if set(head.dimensions) != names or not isinstance(self.backend, PromptStates):
            log.warning("the score head does not fit this judge (dimensions or backend); scores come from the model")
            return False
        return True

    @property
    def live_max_tokens(self) -> int:
        """Room for both sides' integers at their longest ("-10, " is five tokens) and brackets."""
        return 10 * len(self.dimensions.dimensions) + 16

    def evaluate(
        self,
        episode_id: str,
        scenario: Scenario,
        characters: tuple[Character, Character],
        turns: Sequence[Turn],
        *,
        kind: Literal["provisional", "terminal"],
        cancel: threading.Event | None = None,
    ) -> Evaluation:
        """Score both agents with reasons (the terminal evaluation). Backend errors become
        failures; Cancelled propagates."""
        started = time.perf_counter()
        completions: list[Completion] = []
        agents = [
            self._evaluate_agent(scenario, characters, turns, agent, cancel, completions) for agent in (0, 1)
        ]
        return self._record(episode_id, kind, turns, agents, started, completions)

    def evaluate_live(
        self,
        episode_id: str,
        scenario: Scenario,
        characters: tuple[Character, Character],
        turns: Sequence[Turn],
        *,
        skipped_turns: Sequence[int] = (),
        cancel: threading.Event | None = None,
    ) -> Evaluation:
        """A provisional evaluation after the newest of `turns`: both sides' scores in one short
        call, without reasons (`live_messages`). Backend errors become failures; Cancelled
        propagates."""
        started = time.perf_counter()
        completions: list[Completion] = []
        try:
            completion = self._live_completion(live_messages(scenario, characters, turns, self.dimensions), cancel)
        except BackendError as error:
            failure = AgentEvaluation(failure=f"judge model failed: {error}")
            agents = [failure, failure]
        else:
            completions.append(completion)
            agents = parse_live_scores(completion.text, self.dimensions)
            if completion.finish_reason == "length" and not all(agent.ok for agent in agents):
                cut = AgentEvaluation(failure=f"live judge output was cut off at {self.live_max_tokens} tokens")
                agents = [agent if agent.ok else cut for agent in agents]
            if all(agent.ok for agent in agents):  # scores move little from one turn to the next
                names = [d.name for d in self.dimensions.dimensions]
                self._live_guess = [str(agent.scores[name].score) for agent in agents for name in names]
        evaluation = self._record(episode_id, "provisional", turns, agents, started, completions)
        evaluation.skipped_turns = list(skipped_turns)
        return evaluation

    def _live_completion(self, messages: list[ChatMessage], cancel: threading.Event | None) -> Completion:
        """Each integer chosen greedily among its allowed ones where the backend can fill a
        template (what greedy generation under `live_schema` would answer, without repeat
        penalty, for a fraction of the cost; the last live scores as the guess to check first),
        else generation under `live_schema`."""
        if isinstance(self.backend, ChoiceFilling) and self.temperature == 0:
            return self.backend.fill_choices(messages, self._live_template, guess=self._live_guess, cancel=cancel)
        return self.backend.complete(
            messages,
            schema=self._live_schema,
            max_tokens=self.live_max_tokens,
            temperature=self.temperature,
            cancel=cancel,
        )

    def warm_up(
        self,
        scenario: Scenario,
        characters: tuple[Character, Character],
        played: Sequence[Turn] = (),
        cancel: threading.Event | None = None,
    ) -> None:
        """Read the opening all of the episode's judge prompts share, with the turns already
        played (a resumed episode), into the backend's KV cache (`read_ahead`, or one sampled
        token), so that the first live call reads only the next turn. A failure is left for the
        real calls to report; Cancelled propagates."""
        messages = warm_up_messages(scenario, characters, self.dimensions, played)
        try:
            if isinstance(self.backend, PromptReading):
                self.backend.read_ahead(messages, cancel=cancel)
            else:
                self.backend.complete(messages, max_tokens=1, temperature=0.0, cancel=cancel)
        except BackendError as error:
            log.info("the live judge's warm-up failed: %s", error)

    def read_ahead(
        self,
        scenario: Scenario,
        characters: tuple[Character, Character],
        turns: Sequence[Turn],
        cancel: threading.Event | None = None,
    ) -> bool:
        """Read the opening and `turns` (the last may be a turn still being written, as far as
        it goes) into the backend's KV cache while the turn is played, so that its live call
        reads only the turn's last words and the task. False where the backend cannot (nothing
        read); a failure is left for the live call to report; Cancelled propagates."""
        if not isinstance(self.backend, PromptReading):
            return False
        try:
            self.backend.read_ahead(warm_up_messages(scenario, characters, self.dimensions, turns), cancel=cancel)
        except BackendError as error:
            log.info("the live judge could not read ahead: %s", error)
        return True

    def _record(
        self,
        episode_id: str,
        kind: Literal["provisional", "terminal"],
        turns: Sequence[Turn],
        agents: list[AgentEvaluation],
        started: float,
        completions: Sequence[Completion],
    ) -> Evaluation:
        return Evaluation(
            episode_id=episode_id,
            kind=kind,
            after_turn=turns[-1].index if turns else -1,
            judge_model=self.model_name or self.backend.name,
            dimension_set=self.dimensions.name,
            agents=agents,
            latency_ms=(time.perf_counter() - started) * 1000,
            prompt_tokens=sum(c.prompt_tokens for c in completions),
            cached_tokens=sum(c.cached_tokens for c in completions),
        )

    def _evaluate_agent(
        self,
        scenario: Scenario,
        characters: tuple[Character, Character],
        turns: Sequence[Turn],
        agent: int,
        cancel: threading.Event | None,
        completions: list[Completion],
    ) -> AgentEvaluation:
        messages = judge_messages(scenario, characters, turns, agent, self.dimensions)
        try:
            completion = self.backend.complete(
                messages,
                schema=self._schema,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                cancel=cancel,
            )
        except BackendError as error:
            return AgentEvaluation(failure=f"judge model failed: {error}")
        completions.append(completion)
        result = parse_agent_evaluation(completion.text, self.dimensions)
        if completion.finish_reason == "length" and not result.ok:
            result = AgentEvaluation(failure=f"judge output was cut off at {self.max_tokens} tokens")
        return self._head_scores(messages, result) if self.score_head is not None else result

    def _head_scores(self, messages: list[ChatMessage], written: AgentEvaluation) -> AgentEvaluation:
        """The score head's integers, with the reasons the model wrote (none if it failed)."""
        assert self.score_head is not None and isinstance(self.backend, PromptStates)
        try:
            state = self.backend.prompt_state(messages, self.score_head.prompt_tokens)
            head_scores = self.score_head.scores(state)
        except (BackendError, ScoreHeadError) as error:
            return written if written.ok else AgentEvaluation(failure=f"score head failed: {error}")
        scores = {
            name: DimensionScore(score=value, reasoning=written.scores[name].reasoning if written.ok else "")
            for name, value in head_scores.items()
        }
        return AgentEvaluation(scores=scores, overall=overall_score(scores))


READ_AHEAD_CHARS = 32  # about 8 tokens: each read-ahead also re-reads the last 2 or 3 it read before


class LiveEvaluator:
    """Scores the episode after each turn, in its own thread, without holding the runner up.

    `request(turns)` never blocks. While the judge is busy a request waits, and a newer request
    replaces a waiting one: a judge that falls behind scores the newest turn, never a backlog,
    and that provisional evaluation lists the turns left without a score of their own in
    `Evaluation.skipped_turns` (for a front end to say so). Every result, a failure included,
    goes to `on_result` on this thread, in the order of the turns.

    Each live call is `Judge.evaluate_live`: its prompt only grows from one call to the next,
    so a judge backend with a KV cache re-reads just the new turn and the short task.
    `warm_up=True` reads the shared opening (and the `played` turns, those of the episode
    before this evaluator started, which it does not score) while the next turn is played.
    `turn_streaming` lets the judge, while it has nothing to score, read the turn being played
    as its model writes it (`Judge.read_ahead`), so that scoring it reads only its last words.
    """

    def __init__(
        self,
        judge: Judge,
        episode_id: str,
        scenario: Scenario,
        characters: tuple[Character, Character],
        on_result: Callable[[Evaluation], None],
        *,
        played: Sequence[Turn] = (),
        warm_up: bool = False,
    ):
        self._judge = judge
        self._episode_id = episode_id
        self._scenario = scenario
        self._characters = characters
        self._on_result = on_result
        self._played = list(played)
        self._scored_through = self._played[-1].index if self._played else -1
        self._warm_up = warm_up
        self._pending: list[Turn] | None = None
        self._streaming: tuple[tuple[Turn, ...], int, int, str] | None = None
        self._streamed_read = 0  # characters of the streaming turn read ahead
        self._reads_ahead = True
        self._condition = threading.Condition()
        self._closing = False
        self._finishing = False
        self._cancel = threading.Event()
        self.completed = 0
        self.coalesced = 0
        self.skipped = 0
        self.read_aheads = 0
        self.warm = threading.Event()  # set once the opening is read (at once without a warm-up)
        if not warm_up:
            self.warm.set()
        self._thread = threading.Thread(target=self._loop, name="live-judge", daemon=True)
        self._thread.start()

    def request(self, turns: Sequence[Turn]) -> None:
        """Ask for a score after the newest of `turns` (never blocks)."""
        with self._condition:
            if self._closing:
                return
            if self._pending is not None:
                self.coalesced += 1
            self._pending = list(turns)
            self._streaming = None
            self._condition.notify()

    def turn_streaming(self, turns: Sequence[Turn], index: int, agent: int, streamed: str) -> None:
        """Turn `index`, after `turns`, is being played: `agent`'s model has written `streamed`
        so far (its JSON action). Never blocks. Whenever READ_AHEAD_CHARS more have come and
        nothing waits to be scored, the judge reads the turn so far into its KV cache."""
        with self._condition:
            if self._closing or not self._reads_ahead:
                return
            if self._streaming is None or self._streaming[1] != index or len(streamed) < self._streamed_read:
                self._streamed_read = 0  # a new turn, or one played again
            self._streaming = (tuple(turns), index, agent, streamed)
            if self._read_ahead_due():
                self._condition.notify()

    def close(self, *, finish: bool = False, cancel_running: bool = True, timeout: float | None = None) -> None:
        """Stop the live judge. `finish=True` lets it score the newest requested turn first (the
        end of an episode), within `timeout`, after which it is cancelled; otherwise a waiting
        request is dropped and, with `cancel_running`, the call in progress is cancelled."""
        with self._condition:
            self._closing = True
            self._finishing = finish
            if not finish:
                self._pending = None
            self._condition.notify()
        if cancel_running and not finish:
            self._cancel.set()
        self._thread.join(timeout)
        if self._thread.is_alive() and cancel_running:
            self._cancel.set()
            self._thread.join(timeout)

    def _read_ahead_due(self) -> bool:
        return self._streaming is not None and len(self._streaming[3]) - self._streamed_read >= READ_AHEAD_CHARS

    def _next_job(self) -> tuple[Literal["score"], list[Turn]] | tuple[Literal["read"], tuple] | None:
        """("score", turns) first, else ("read", the streaming turn), or None: stop."""
        with self._condition:
            while self._pending is None and not self._closing and not self._read_ahead_due():
                self._condition.wait()
            if self._pending is not None and (self._finishing or not self._closing):
                turns, self._pending = self._pending, None
                return "score", turns
            if self._closing:
                return None
            assert self._streaming is not None
            self._streamed_read = len(self._streaming[3])
            return "read", self._streaming

    def _loop(self) -> None:
        try:
            if self._warm_up:
                try:
                    self._judge.warm_up(self._scenario, self._characters, self._played, cancel=self._cancel)
                finally:
                    self.warm.set()
            while (job := self._next_job()) is not None:
                if job[0] == "score":
                    self._score(job[1])
                else:
                    self._read_ahead(*job[1])
        except Cancelled:
            return
        except Exception:  # a bug must not pass silently; the episode plays on without live scores
            log.exception("the live judge of episode %s stopped", self._episode_id)

    def _read_ahead(self, turns: tuple[Turn, ...], index: int, agent: int, streamed: str) -> None:
        partial = streamed_turn(self._episode_id, index, agent, streamed)
        if partial is None:  # no argument yet: try again at the next piece, not READ_AHEAD_CHARS on
            with self._condition:
                if self._streaming is not None and self._streaming[1] == index:
                    self._streamed_read = len(streamed) - READ_AHEAD_CHARS + 1
            return
        if self._judge.read_ahead(self._scenario, self._characters, [*turns, partial], cancel=self._cancel):
            self.read_aheads += 1
        else:
            with self._condition:
                self._reads_ahead = False  # the judge's backend keeps no cache to read into

    def _score(self, turns: list[Turn]) -> None:
        newest = turns[-1].index if turns else -1
        skipped = [turn.index for turn in turns if self._scored_through < turn.index < newest]
        evaluation = self._judge.evaluate_live(
            self._episode_id,
            self._scenario,
            self._characters,
            turns,
            skipped_turns=skipped,
            cancel=self._cancel,
        )
        self._scored_through = newest
        self.completed += 1
        self.skipped += len(skipped)
        self._on_result(evaluation)
