"""Frozen episodes: one episode and what surrounds it, fixed in one pydantic record.

An episode is *frozen* with its record, turns (with any curator edits), terminal evaluation,
the two characters' names and the context each agent started from. Snapshots keep frozen
episodes, so an export reads only what was frozen and never the live store.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from ..episode import AgentAction, Episode, Evaluation, Turn
from ..profiles import Character, Scenario
from ..store import NotFound, Store
from ..visibility import agent_view

SideKey = tuple[str, int]  # (episode id, side 0 or 1)


def effective_argument(turn: Turn) -> str:
    """The argument after a curator's edit, or the original one."""
    return turn.edited_argument if turn.edited_argument is not None else turn.argument


def effective_action(turn: Turn) -> AgentAction:
    return AgentAction(action_type=turn.action_type, argument=effective_argument(turn))


class FrozenEpisode(BaseModel):
    """Everything an export needs from one episode, fixed at the moment it was frozen."""

    episode: Episode
    turns: list[Turn]
    evaluation: Evaluation | None = Field(description="the terminal evaluation, if any")
    names: list[str] = Field(min_length=2, max_length=2)
    contexts: list[str] = Field(min_length=2, max_length=2, description="what each agent knew at the start")
    scenario: Scenario | None = Field(default=None, description="the scenario as it was (None in older snapshots)")
    characters: list[Character] = Field(default_factory=list, max_length=2, description="both characters, if found")

    @property
    def id(self) -> str:
        return self.episode.id


def _first_system_message(turns: Sequence[Turn], side: int) -> str:
    for turn in turns:
        if turn.agent == side:
            for message in turn.prompt:
                if message.role == "system":
                    return message.content
    return ""


def freeze_episode(store: Store, episode_id: str) -> FrozenEpisode:
    """Read one episode and what surrounds it from the store into a self-contained record."""
    episode = store.episode(episode_id)
    turns = store.turns(episode.id)
    try:
        characters = tuple(store.character(character_id) for character_id in episode.agent_ids)
        names = [character.name for character in characters]
    except NotFound:
        characters = None
        names = list(episode.agent_ids)
    try:
        scenario = store.scenario(episode.scenario_id)
    except NotFound:
        scenario = None
    if scenario is not None and characters is not None:
        contexts = [agent_view(scenario, characters, side).render() for side in (0, 1)]  # type: ignore[arg-type]
    else:  # profiles deleted since: the agent's own system message is the best record left
        contexts = [_first_system_message(turns, side) for side in (0, 1)]
    return FrozenEpisode(
        episode=episode,
        turns=turns,
        evaluation=store.terminal_evaluation(episode.id),
        names=names,
        contexts=contexts,
        scenario=scenario,
        characters=list(characters) if characters is not None else [],
    )
