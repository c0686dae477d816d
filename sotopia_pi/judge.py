"""The judge: SOTOPIA-EVAL's seven dimensions (or any custom set) scored per agent.

The judge sees everything (both profiles with secrets, both goals) and the whole transcript.
Each agent is scored in one call whose JSON schema enumerates the allowed integers of every
dimension, so a score out of range cannot come back even from a model that ignores
minimum/maximum. Anything that still goes wrong is stored as a failure with its reason, never
as a score.

Live evaluation runs in its own thread beside the conversation. When turns arrive faster than
the judge can score them, pending requests collapse into the newest one.
"""

from __future__ import annotations

import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, model_validator

from . import paths
from .backends import BackendError, Cancelled, ChatBackend
from .episode import AgentEvaluation, ChatMessage, DimensionScore, Evaluation, Turn
from .profiles import Character, Scenario
from .model_text import clean_text, read_json_object
from .prompts import history_lines
from .visibility import judge_view

REASONING_MAX_CHARS = 160


class Dimension(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    low: int
    high: int

    @model_validator(mode="after")
    def _range(self) -> "Dimension":
        if self.low >= self.high:
            raise ValueError(f"dimension {self.name}: low ({self.low}) must be below high ({self.high})")
        return self


class DimensionSet(BaseModel):
    name: str
    description: str = ""
    dimensions: list[Dimension] = Field(min_length=1, alias="dimension")

    model_config = {"populate_by_name": True}

    @model_validator(mode="after")
    def _unique(self) -> "DimensionSet":
        names = [d.name for d in self.dimensions]
        if len(names) != len(set(names)):
            raise ValueError(f"dimension set {self.name}: duplicate dimension names")
        return self

    def by_name(self) -> dict[str, Dimension]:
        return {d.name: d for d in self.dimensions}


class DimensionSetError(ValueError):
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


def overall_score(scores: dict[str, DimensionScore]) -> float:
    """SOTOPIA's overall: the unweighted mean of the dimension scores."""
    return sum(s.score for s in scores.values()) / len(scores)


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


def judge_messages(
    scenario: Scenario,
    characters: tuple[Character, Character],
    turns: Sequence[Turn],
    agent: int,
    dimensions: DimensionSet,
) -> list[ChatMessage]:
    names = (characters[0].name, characters[1].name)
    transcript = "\n".join(history_lines(turns, names)) or "(no one did anything)"
    rubric = "\n".join(
        f"- {d.name} (integer from {d.low} to {d.high}): {d.description}" for d in dimensions.dimensions
    )
    system = (
        "You are an impartial expert judge of social interactions. You read a role-played "
        "conversation together with everything the participants know privately (their "
        "backgrounds, secrets and goals), and you score one participant at a time, fairly and "
        "strictly, using the whole range of each scale."
    )
    user = (
        f"The interaction:\n{judge_view(scenario, characters).render()}\n\n"
        f"What happened:\n{transcript}\n\n"
        f"Score {names[agent]} only. For every dimension below, first give a one-sentence reason, "
        f"then an integer score inside its range.\n{rubric}\n\n"
        "Answer with one JSON object whose keys are the dimension names, each holding "
        '{"reasoning": "...", "score": N}.'
    )
    return [ChatMessage(role="system", content=system), ChatMessage(role="user", content=user)]


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


class Judge:
    def __init__(
        self,
        backend: ChatBackend,
        dimensions: DimensionSet | None = None,
        *,
        max_tokens: int = 1400,
        temperature: float = 0.0,
    ):
        self.backend = backend
        self.dimensions = dimensions or load_dimension_set("sotopia")
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._schema = evaluation_schema(self.dimensions)

    def evaluate(
        self,
        episode_id: str,
        scenario: Scenario,
        characters: tuple[Character, Character],
        turns: Sequence[Turn],
        *,
        kind: str,
        cancel: threading.Event | None = None,
    ) -> Evaluation:
        """Score both agents. Backend errors become failures; Cancelled propagates."""
        started = time.perf_counter()
        agents = [
            self._evaluate_agent(scenario, characters, turns, agent, cancel) for agent in (0, 1)
        ]
        return Evaluation(
            episode_id=episode_id,
            kind=kind,  # type: ignore[arg-type]
            after_turn=turns[-1].index if turns else -1,
            judge_model=self.backend.name,
            dimension_set=self.dimensions.name,
            agents=agents,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    def _evaluate_agent(
        self,
        scenario: Scenario,
        characters: tuple[Character, Character],
        turns: Sequence[Turn],
        agent: int,
        cancel: threading.Event | None,
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
        if completion.finish_reason == "length":
            result = parse_agent_evaluation(completion.text, self.dimensions)
            if not result.ok:
                return AgentEvaluation(failure=f"judge output was cut off at {self.max_tokens} tokens")
            return result
        return parse_agent_evaluation(completion.text, self.dimensions)


class LiveEvaluator:
    """Scores the episode after each turn, in its own thread, without holding the runner up.

    `request(turns)` never blocks. If the judge is busy, the request waits; a newer request
    replaces a waiting one, so the judge always works on the latest state of the conversation.
    """

    def __init__(
        self,
        judge: Judge,
        episode_id: str,
        scenario: Scenario,
        characters: tuple[Character, Character],
        on_result: Callable[[Evaluation], None],
    ):
        self._judge = judge
        self._episode_id = episode_id
        self._scenario = scenario
        self._characters = characters
        self._on_result = on_result
        self._pending: list[Turn] | None = None
        self._condition = threading.Condition()
        self._closing = False
        self._cancel = threading.Event()
        self.completed = 0
        self.coalesced = 0
        self._thread = threading.Thread(target=self._loop, name="live-judge", daemon=True)
        self._thread.start()

    def request(self, turns: Sequence[Turn]) -> None:
        with self._condition:
            if self._pending is not None:
                self.coalesced += 1
            self._pending = list(turns)
            self._condition.notify()

    def close(self, *, cancel_running: bool = True, timeout: float | None = None) -> None:
        with self._condition:
            self._closing = True
            self._pending = None
            self._condition.notify()
        if cancel_running:
            self._cancel.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._condition:
                while self._pending is None and not self._closing:
                    self._condition.wait()
                if self._closing:
                    return
                turns, self._pending = self._pending, None
            try:
                evaluation = self._judge.evaluate(
                    self._episode_id,
                    self._scenario,
                    self._characters,
                    turns,
                    kind="provisional",
                    cancel=self._cancel,
                )
            except Cancelled:
                return
            self.completed += 1
            self._on_result(evaluation)
