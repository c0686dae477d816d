"""From judged episodes to training files.

Snapshots keep frozen episodes (dataset.frozen), so an export reads only what was frozen and
never the live store; the per-turn examples come from dataset.examples.

Formats written by `write_export`, one JSON object a line:

    sft                the per-turn examples with their provenance: id, episode_id, side, turn,
                       scenario_id, model and adapter (of that turn), by_human, edited,
                       dropped_history_lines, prompt (chat messages) and completion (the JSON
                       action, a string)
    chat               {"messages": [...prompt, {"role": "assistant", "content": JSON action}]}
                       (TRL conversational / OpenAI chat fine-tuning)
    prompt-completion  {"prompt": [...messages], "completion": [{"role": "assistant", ...}]}
                       (TRL's *conversational* prompt-completion form, so the tokenizer's chat
                       template is applied and the loss covers the completion only)
    episodelog         Sotopia's EpisodeLog: one row per episode, not per example
    sotopia-episodes   the episode files Sotopia's episodes_to_jsonl writes and jsonl_to_episodes
                       reads (episode_id, environment_id, raw_messages, ..., social_interactions)

Both episode formats write the environment's observations exactly as Sotopia does: the context
block ends with "Conversation Starts:" and a newline, and every later "Turn #k: ..." line ends
with a newline too (Sotopia's social_interactions relies on it to keep turn 0).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from ..episode import ActionType, AgentAction, ChatMessage, Turn, overall_score
from ..profiles import Character
from ..prompts import turn_line
from .examples import (
    HISTORY_LINE_PREFIX,
    SftExample,
    TokenCounter,
    build_examples,
    estimate_tokens,
)
from .frozen import FrozenEpisode, effective_action
from .snapshots import Snapshot

CONVERSATION_STARTS = "Conversation Starts:"
ENVIRONMENT = "Environment"


class ExportFormat(StrEnum):
    sft = "sft"
    chat = "chat"
    prompt_completion = "prompt-completion"
    episodelog = "episodelog"
    sotopia_episodes = "sotopia-episodes"


# Formats with one row per episode rather than one per training example.
EPISODE_FORMATS = frozenset({ExportFormat.episodelog, ExportFormat.sotopia_episodes})


# -- rows of each format ------------------------------------------------------------------


def _messages(messages: Sequence[ChatMessage]) -> list[dict]:
    return [message.model_dump() for message in messages]


def sft_row(example: SftExample) -> dict:
    return example.model_dump(mode="json")


def chat_row(example: SftExample) -> dict:
    answer = ChatMessage(role="assistant", content=example.completion)
    return {"messages": _messages([*example.prompt, answer])}


def prompt_completion_row(example: SftExample) -> dict:
    answer = ChatMessage(role="assistant", content=example.completion)
    return {"prompt": _messages(example.prompt), "completion": _messages([answer])}


class EpisodeLogRow(BaseModel):
    """Sotopia's EpisodeLog as it is written to JSONL (tuples become JSON arrays)."""

    pk: str
    environment: str
    agents: list[str] = Field(min_length=2, max_length=2)
    tag: str | None = None
    models: list[str] = Field(min_length=3, max_length=3, description="[judge, agent 1, agent 2]")
    messages: list[list[tuple[str, str, str]]]
    reasoning: str
    rewards: list[tuple[float, dict[str, float]] | float]
    rewards_prompt: str = ""

    @model_validator(mode="after")
    def _one_reward_per_agent(self) -> EpisodeLogRow:
        if len(self.rewards) != len(self.agents):
            raise ValueError(f"{len(self.rewards)} rewards for {len(self.agents)} agents")
        return self


def _observation_after(frozen: FrozenEpisode, turn: Turn) -> str:
    """Sotopia's "Turn #k: ..." observation, with the newline Sotopia ends it with."""
    if turn.action_type == ActionType.none:
        return f"{HISTORY_LINE_PREFIX}{turn.index}: \n"
    return turn_line(turn.index, frozen.names[turn.agent], effective_action(turn)) + "\n"


def _episodelog_messages(frozen: FrozenEpisode) -> list[list[tuple[str, str, str]]]:
    """Sotopia's layout: per step, what the environment told each agent, then each agent's action
    ("did nothing" for the one whose turn it was not); the last step has observations only."""
    names = frozen.names
    observations = [f"\n{context}\n{CONVERSATION_STARTS}\n" for context in frozen.contexts]
    steps: list[list[tuple[str, str, str]]] = []
    for turn in frozen.turns:
        step = [(ENVIRONMENT, names[side], observations[side]) for side in (0, 1)]
        for side in (0, 1):
            action = effective_action(turn) if turn.agent == side else AgentAction(action_type=ActionType.none)
            step.append((names[side], ENVIRONMENT, action.to_natural_language()))
        steps.append(step)
        observation = _observation_after(frozen, turn)
        observations = [observation, observation]
    if frozen.turns:
        steps.append([(ENVIRONMENT, names[side], observations[side]) for side in (0, 1)])
    return steps


def _rewards_and_reasoning(frozen: FrozenEpisode) -> tuple[list[tuple[float, dict[str, float]] | float], str]:
    evaluation = frozen.evaluation
    rewards: list[tuple[float, dict[str, float]] | float] = []
    comments: list[str] = []
    for side in (0, 1):
        agent = evaluation.agents[side] if evaluation is not None else None
        header = f"Agent {side + 1} ({frozen.names[side]})"
        if agent is None or not agent.ok or not agent.scores:
            reason = "no terminal evaluation" if agent is None else (agent.failure or "no scores")
            rewards.append(0.0)
            comments.append(f"{header}: not scored ({reason})")
            continue
        overall = agent.overall if agent.overall is not None else overall_score(agent.scores)
        dims = {name: float(score.score) for name, score in agent.scores.items()}
        rewards.append((overall, {**dims, "overall_score": overall}))
        lines = [f"{name}: {score.reasoning}" for name, score in agent.scores.items()]
        comments.append(f"{header} comments:\n" + "\n".join(lines))
    return rewards, "\n".join(comments)


def episodelog_row(frozen: FrozenEpisode) -> dict:
    episode = frozen.episode
    rewards, reasoning = _rewards_and_reasoning(frozen)
    judge = frozen.evaluation.judge_model if frozen.evaluation is not None else episode.judge_model
    row = EpisodeLogRow(
        pk=episode.id,
        environment=episode.scenario_id,
        agents=list(episode.agent_ids),
        tag=",".join(episode.tags) or None,
        models=[judge, *episode.agent_models],
        messages=_episodelog_messages(frozen),
        reasoning=reasoning,
        rewards=rewards,
    )
    return row.model_dump(mode="json")


def sotopia_background(character: Character) -> str:
    """A character's full background in the words Sotopia's episode writer uses."""
    gender = {"man": "male", "woman": "female", "nonbinary": "nonbinary"}.get(
        character.gender.strip().lower(), character.gender.strip().lower()
    )
    return (
        f"{character.name} is a {character.age}-year-old {gender} {character.occupation.lower()}. "
        f"{character.gender_pronoun} pronouns. {character.public_info} Personality and values "
        f"description: {character.personality_and_values} {character.first_name}'s secrets: {character.secret}"
    )


def _rendered_steps(messages: Sequence[Sequence[Sequence[str]]]) -> list[str]:
    """Each step as Sotopia's EpisodeLog.render_for_humans prints it: the two opening
    observations on step 0, then every action except "did nothing" with its sender."""
    steps = []
    for index, step in enumerate(messages):
        lines = [step[0][2], step[1][2]] if index == 0 else []
        for sender, receiver, text in step:
            if receiver != ENVIRONMENT:
                continue
            if sender == ENVIRONMENT:
                lines.append(text)
            elif "did nothing" not in text:
                lines.append(f"{sender} {text}" if "said:" in text else f"{sender}: {text}")
        steps.append("\n".join(lines))
    return steps


def social_interactions(messages: Sequence[Sequence[Sequence[str]]], tag: str = "") -> str:
    """The dialogue text Sotopia's episode writer stores: the rendered steps without the last
    (observations only), the opening contexts cut at the last "Conversation Starts:" line."""
    steps = _rendered_steps(messages)
    if len(steps) + 2 < 3:  # Sotopia counts the reasoning and rewards lines too
        return ""
    kept = steps[:-1]
    if "script" in tag.split("_"):
        kept = kept[1:]
    else:
        opening = kept[0].split(f"{CONVERSATION_STARTS}\n\n")
        kept = kept[1:] if len(opening) < 3 else [opening[-1], *kept[1:]]
    return "\n\n".join(kept)


class SotopiaEpisodeRow(BaseModel):
    """A row of Sotopia's episode file (its episodes_to_jsonl / jsonl_to_episodes layout)."""

    episode_id: str
    environment_id: str
    agent_ids: list[str] = Field(min_length=2, max_length=2)
    experiment_tag: str
    experiment_model_name_pairs: list[str] = Field(min_length=3, max_length=3)
    raw_messages: list[list[tuple[str, str, str]]]
    raw_rewards: list[tuple[float, dict[str, float]] | float]
    raw_rewards_prompt: str = ""
    scenario: str
    codename: str
    agents_background: dict[str, str]
    social_goals: dict[str, str]
    social_interactions: str
    reasoning: str
    rewards: list[tuple[float, dict[str, float]]] = Field(
        description="both agents' scores; empty unless both were scored (Sotopia writes no other case)"
    )


def sotopia_episode_row(frozen: FrozenEpisode) -> dict:
    """One episode in Sotopia's episode-file layout. Profiles missing from an older snapshot
    leave the scenario text, codename, backgrounds and goals empty."""
    log = EpisodeLogRow.model_validate(episodelog_row(frozen))
    scenario = frozen.scenario
    characters = frozen.characters if len(frozen.characters) == 2 else []
    scored = [reward for reward in log.rewards if not isinstance(reward, float)]
    row = SotopiaEpisodeRow(
        episode_id=log.pk,
        environment_id=log.environment,
        agent_ids=log.agents,
        experiment_tag=log.tag or "",
        experiment_model_name_pairs=log.models,
        raw_messages=log.messages,
        raw_rewards=log.rewards,
        raw_rewards_prompt=log.rewards_prompt,
        scenario=scenario.scenario if scenario else "",
        codename=scenario.codename if scenario else "",
        agents_background={c.name: sotopia_background(c) for c in characters},
        social_goals=(
            {c.name: goal for c, goal in zip(characters, scenario.agent_goals)} if scenario and characters else {}
        ),
        social_interactions=social_interactions(log.messages, log.tag or ""),
        reasoning=log.reasoning,
        rewards=scored if len(scored) == len(log.rewards) else [],
    )
    return row.model_dump(mode="json")


# -- writing ------------------------------------------------------------------------------


class ExportReport(BaseModel):
    snapshot: str
    format: ExportFormat
    path: str
    rows: int
    examples: int
    truncated_examples: int = 0
    dropped_history_lines: int = 0


def write_jsonl(rows: Iterable[dict], path: Path | str) -> int:
    """Write rows to `path` atomically: a crash leaves the old file, never half a new one."""
    target = Path(path)
    if target.exists() and not target.is_file():  # /dev/stdout, a pipe: write into it, never replace it
        return _write_into(rows, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    count = 0
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return count


def _write_into(rows: Iterable[dict], target: Path) -> int:
    """Rows written straight into a file that is not a regular one (a device or a pipe)."""
    count = 0
    with target.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


_EXAMPLE_ROWS = {
    ExportFormat.sft: sft_row,
    ExportFormat.chat: chat_row,
    ExportFormat.prompt_completion: prompt_completion_row,
}


def snapshot_examples(
    snapshot: Snapshot,
    *,
    max_prompt_tokens: int | None = None,
    count_tokens: TokenCounter = estimate_tokens,
) -> list[SftExample]:
    """The per-turn SFT examples of a snapshot, in the order of its manifest."""
    sides = [(ref.episode_id, ref.side) for ref in snapshot.manifest.sides]
    return build_examples(
        snapshot.episodes, sides, max_prompt_tokens=max_prompt_tokens, count_tokens=count_tokens
    )


def write_export(
    snapshot: Snapshot,
    fmt: ExportFormat | str,
    path: Path | str,
    *,
    max_prompt_tokens: int | None = None,
    count_tokens: TokenCounter = estimate_tokens,
) -> ExportReport:
    """Write a snapshot in one format; the row count is the snapshot's example count
    (its episode count for the episode formats)."""
    fmt = ExportFormat(fmt)
    name = snapshot.manifest.name
    if fmt in EPISODE_FORMATS:
        row = episodelog_row if fmt is ExportFormat.episodelog else sotopia_episode_row
        rows = write_jsonl((row(frozen) for frozen in snapshot.episodes), path)
        return ExportReport(snapshot=name, format=fmt, path=str(path), rows=rows, examples=0)
    examples = snapshot_examples(snapshot, max_prompt_tokens=max_prompt_tokens, count_tokens=count_tokens)
    rows = write_jsonl((_EXAMPLE_ROWS[fmt](example) for example in examples), path)
    return ExportReport(
        snapshot=name,
        format=fmt,
        path=str(path),
        rows=rows,
        examples=len(examples),
        truncated_examples=sum(1 for example in examples if example.dropped_history_lines),
        dropped_history_lines=sum(example.dropped_history_lines for example in examples),
    )
