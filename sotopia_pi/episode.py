"""Episode records: actions, turns, episodes and their evaluations."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import paths
from .profiles import new_id


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def adapter_identity(adapter: str | Path | None) -> str:
    """What a turn records as the adapter that played it: `NAME@vN` for a registered adapter's
    files (<home>/adapters/NAME/vN/...), NAME for one shipped in models/adapters, any other
    path or name as given, and "" for none (the base model)."""
    if not adapter:
        return ""
    path = Path(adapter)
    parts = path.parts
    for position in range(len(parts) - 2):
        name, version = parts[position + 1], parts[position + 2]
        if parts[position] == "adapters" and version[:1] == "v" and version[1:].isdigit():
            return f"{name}@{version}"
    if path.parent == paths.REPO_ROOT / "models" / "adapters":
        return path.stem if path.suffix == ".gguf" else path.name
    return str(adapter)


class ActionType(StrEnum):
    none = "none"
    speak = "speak"
    non_verbal = "non-verbal communication"
    action = "action"
    leave = "leave"


# Fixed order: SOTOPIA built this list from a set, so its order changed between runs.
ACTION_TYPES: tuple[str, ...] = tuple(a.value for a in ActionType)

ARGUMENT_MAX_CHARS = 300


class AgentAction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action_type: ActionType
    argument: str = ""

    def to_natural_language(self) -> str:
        match self.action_type:
            case ActionType.none:
                return "did nothing"
            case ActionType.speak:
                return f'said: "{self.argument}"'
            case ActionType.non_verbal:
                return f"[non-verbal communication] {self.argument}"
            case ActionType.action:
                return f"[action] {self.argument}"
            case ActionType.leave:
                return "left the conversation"

    def to_json(self) -> str:
        return self.model_dump_json()


def action_json_schema() -> dict:
    """The JSON schema agents must answer with; enum and maxLength keep small models in bounds."""
    return {
        "type": "object",
        "properties": {
            "action_type": {"type": "string", "enum": list(ACTION_TYPES)},
            "argument": {"type": "string", "maxLength": ARGUMENT_MAX_CHARS},
        },
        "required": ["action_type", "argument"],
    }


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class EpisodeStatus(StrEnum):
    running = "running"
    paused = "paused"
    finished = "finished"
    failed = "failed"


class Turn(BaseModel):
    """One action by one agent, committed to the store the moment it is taken."""

    episode_id: str
    index: int = Field(ge=0)
    agent: int = Field(ge=0, le=1)
    action_type: ActionType
    argument: str = ""
    model: str = ""
    adapter: str = Field(
        "", description="the adapter that played this turn as its model name gave it (NAME@vN, NAME or a path); '' for none"
    )
    by_human: bool = False
    prompt: list[ChatMessage] = Field(default_factory=list)
    raw_output: str = ""
    parse_note: str = ""
    refused: list[str] = Field(
        default_factory=list,
        description="what was wrong with each answer the model gave for this turn that was not kept "
        "(it repeated an earlier turn, or slipped out of role); the model was asked again after the first",
    )
    echoes: int | None = Field(
        None, description="the earlier turn the kept line still repeats (every answer did); None for a fresh line"
    )
    role_slip: str = Field("", description="how the kept line still slips out of role (every answer did); '' for none")
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    edited_argument: str | None = None
    created_at: str = Field(default_factory=utc_now)

    @model_validator(mode="before")
    @classmethod
    def _adapter_of_older_records(cls, data):
        """Turns stored before `adapter` existed name their adapter in `model` only."""
        if isinstance(data, dict) and "adapter" not in data and "+adapter=" in str(data.get("model", "")):
            data = {**data, "adapter": adapter_identity(str(data["model"]).partition("+adapter=")[2])}
        return data

    @property
    def action(self) -> AgentAction:
        return AgentAction(action_type=self.action_type, argument=self.argument)

    @property
    def resamples(self) -> int:
        """How many more answers the model was asked for."""
        return len(self.refused)


class Episode(BaseModel):
    id: str = Field(default_factory=new_id)
    scenario_id: str
    agent_ids: list[str] = Field(min_length=2, max_length=2)
    agent_models: list[str] = Field(min_length=2, max_length=2)
    judge_model: str = ""
    status: EpisodeStatus = EpisodeStatus.running
    max_turns: int = 20
    live_eval: bool = True
    end_reason: str = ""
    last_error: str = ""
    settings: dict = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    created_at: str = Field(default_factory=utc_now)
    updated_at: str = Field(default_factory=utc_now)


class DimensionScore(BaseModel):
    score: int
    reasoning: str = ""


def overall_score(scores: dict[str, DimensionScore]) -> float:
    """SOTOPIA's overall: the unweighted mean of the dimension scores."""
    return sum(s.score for s in scores.values()) / len(scores)


class AgentEvaluation(BaseModel):
    """One agent's scores, or the reason the judge could not produce them."""

    scores: dict[str, DimensionScore] = Field(default_factory=dict)
    overall: float | None = None
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


class Evaluation(BaseModel):
    id: str = Field(default_factory=new_id)
    episode_id: str
    kind: Literal["provisional", "terminal"]
    after_turn: int = Field(description="index of the last turn the judge saw; -1 if none")
    judge_model: str
    dimension_set: str = "sotopia"
    agents: list[AgentEvaluation] = Field(min_length=2, max_length=2)
    latency_ms: float = 0.0
    skipped_turns: list[int] = Field(
        default_factory=list,
        description="provisional only: turns played since the previous live score that got no "
        "score of their own, because the judge fell behind and scored the newest turn instead",
    )
    prompt_tokens: int = Field(default=0, description="prompt tokens of the judge's calls, summed")
    cached_tokens: int = Field(default=0, description="of those, tokens taken from the judge's KV cache")
    created_at: str = Field(default_factory=utc_now)

    @property
    def ok(self) -> bool:
        return all(agent.ok for agent in self.agents)
