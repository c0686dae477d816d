"""Per-turn SFT examples of frozen episodes, token counts and prompt truncation.

SOTOPIA-pi's recipe: for each kept side and each of its turns, the input is exactly the chat
messages the agent was given at that turn (Turn.prompt) and the output is its action as JSON.
Turns whose action is `none` give no example. A curator's edit changes the output of that turn
only: later prompts keep the words the partner really heard.

Long prompts are cut to `max_prompt_tokens` by dropping the oldest "Turn #" lines of the
dialogue history; the system message and the closing block are never cut.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field

from ..episode import ActionType, ChatMessage, Turn
from ..prompts import CLOSING_PREFIX
from .errors import ExportError, PromptLayoutError
from .frozen import FrozenEpisode, SideKey, effective_action

TokenCounter = Callable[[str], int]

HISTORY_LINE_PREFIX = "Turn #"


# -- token counting -----------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """A rough count that needs no tokenizer: about four characters a token, and never fewer
    tokens than words."""
    return max(len(text.split()), math.ceil(len(text) / 4))


def token_counter(tokenizer: Any = None) -> TokenCounter:
    """A str -> int counter from a Hugging Face tokenizer (anything with `encode`), a plain
    callable, or None for the rough estimate."""
    if tokenizer is None:
        return estimate_tokens
    if hasattr(tokenizer, "encode"):
        return lambda text: len(tokenizer.encode(text, add_special_tokens=False))
    if callable(tokenizer):
        return tokenizer
    raise TypeError(f"cannot count tokens with {type(tokenizer).__name__}; pass a tokenizer or a callable")


def count_message_tokens(messages: Sequence[ChatMessage], count_tokens: TokenCounter) -> int:
    """Tokens of the message texts (the chat template's few extra tokens are not counted)."""
    return sum(count_tokens(message.content) for message in messages)


# -- truncation ---------------------------------------------------------------------------


class _HistoryLayout(BaseModel):
    message_index: int
    head: list[str]  # lines before the first history entry ("Conversation so far:")
    entries: list[list[str]]  # one entry per "Turn #" line, with any continuation lines
    tail: list[str]  # blank separator lines and the closing block

    def render(self, dropped: int) -> str:
        kept = [line for entry in self.entries[dropped:] for line in entry]
        return "\n".join(self.head + kept + self.tail)


def _split_history(messages: Sequence[ChatMessage]) -> _HistoryLayout:
    """Find the user message that holds the dialogue history and split it into entries."""
    for message_index in range(len(messages) - 1, -1, -1):
        message = messages[message_index]
        if message.role != "user":
            continue
        lines = message.content.split("\n")
        closing = [i for i, line in enumerate(lines) if line.startswith(CLOSING_PREFIX)]
        if not closing:
            continue
        body, tail = lines[: closing[-1]], lines[closing[-1] :]
        while body and not body[-1].strip():
            tail.insert(0, body.pop())
        head: list[str] = []
        entries: list[list[str]] = []
        for line in body:
            if line.startswith(HISTORY_LINE_PREFIX):
                entries.append([line])
            elif entries:
                entries[-1].append(line)  # an argument that spans several lines
            else:
                head.append(line)
        return _HistoryLayout(message_index=message_index, head=head, entries=entries, tail=tail)
    raise PromptLayoutError(f"no user message has a closing block starting with {CLOSING_PREFIX!r}")


def truncate_prompt(
    messages: Sequence[ChatMessage],
    max_tokens: int,
    count_tokens: TokenCounter = estimate_tokens,
) -> tuple[list[ChatMessage], int]:
    """Drop the oldest dialogue lines until the prompt fits in `max_tokens`.

    Returns the messages and how many history lines were dropped. The system message (role-play
    instructions and context) and the closing block are never cut; if the prompt is still too
    long with no history left, it is returned that way.
    """
    messages = list(messages)
    if count_message_tokens(messages, count_tokens) <= max_tokens:
        return messages, 0
    layout = _split_history(messages)
    original = messages[layout.message_index]
    candidate = messages
    for dropped in range(1, len(layout.entries) + 1):
        candidate = list(messages)
        candidate[layout.message_index] = ChatMessage(role=original.role, content=layout.render(dropped))
        if count_message_tokens(candidate, count_tokens) <= max_tokens:
            return candidate, dropped
    return candidate, len(layout.entries)


# -- per-turn SFT examples ----------------------------------------------------------------


class SftExample(BaseModel):
    id: str
    episode_id: str
    side: int
    turn: int
    scenario_id: str
    model: str = Field(description="the model that played this turn (\"human\" for a person's turn)")
    adapter: str = Field(default="", description="the adapter that played this turn; '' for none")
    by_human: bool = False
    edited: bool = False
    dropped_history_lines: int = 0
    prompt: list[ChatMessage]
    completion: str = Field(description="the action as JSON")


def is_example_turn(turn: Turn) -> bool:
    """Whether a turn becomes a training example: an action other than none, with its prompt."""
    return turn.action_type != ActionType.none and bool(turn.prompt)


def side_examples(frozen: FrozenEpisode, side: int) -> list[SftExample]:
    episode = frozen.episode
    return [
        SftExample(
            id=f"{episode.id}-{side}-{turn.index}",
            episode_id=episode.id,
            side=side,
            turn=turn.index,
            scenario_id=episode.scenario_id,
            model=turn.model or episode.agent_models[side],
            adapter=turn.adapter,
            by_human=turn.by_human,
            edited=turn.edited_argument is not None,
            prompt=list(turn.prompt),
            completion=effective_action(turn).to_json(),
        )
        for turn in frozen.turns
        if turn.agent == side and is_example_turn(turn)
    ]


def build_examples(
    episodes: Iterable[FrozenEpisode],
    sides: Iterable[SideKey],
    *,
    max_prompt_tokens: int | None = None,
    count_tokens: TokenCounter = estimate_tokens,
) -> list[SftExample]:
    """Examples for the given (episode id, side) pairs, in the order of `sides`."""
    by_id = {frozen.id: frozen for frozen in episodes}
    examples: list[SftExample] = []
    for episode_id, side in sides:
        if episode_id not in by_id:
            raise ExportError(f"episode {episode_id} is selected but was not frozen")
        for example in side_examples(by_id[episode_id], side):
            if max_prompt_tokens is not None:
                try:
                    example.prompt, example.dropped_history_lines = truncate_prompt(
                        example.prompt, max_prompt_tokens, count_tokens
                    )
                except PromptLayoutError as error:
                    raise PromptLayoutError(f"example {example.id}: {error}") from error
            examples.append(example)
    return examples


def example_tokens(example: SftExample, count_tokens: TokenCounter) -> int:
    return count_message_tokens(example.prompt, count_tokens) + count_tokens(example.completion)


# -- selection statistics -----------------------------------------------------------------


class Counts(BaseModel):
    sides: int = 0
    examples: int = 0
    tokens: int = 0


class SelectionStats(BaseModel):
    """What a selection would produce: totals, per side (0, 1) and per scenario id."""

    episodes: int = 0
    total: Counts = Field(default_factory=Counts)
    per_side: dict[str, Counts] = Field(default_factory=dict)
    per_scenario: dict[str, Counts] = Field(default_factory=dict)


def selection_stats(
    episodes: Iterable[FrozenEpisode],
    sides: Sequence[SideKey],
    *,
    max_prompt_tokens: int | None = None,
    count_tokens: TokenCounter = estimate_tokens,
) -> SelectionStats:
    episodes = list(episodes)
    scenario_of = {frozen.id: frozen.episode.scenario_id for frozen in episodes}
    examples = build_examples(
        episodes, sides, max_prompt_tokens=max_prompt_tokens, count_tokens=count_tokens
    )
    per_key: dict[SideKey, list[SftExample]] = {key: [] for key in sides}
    for example in examples:
        per_key[(example.episode_id, example.side)].append(example)
    stats = SelectionStats(episodes=len({episode_id for episode_id, _ in sides}))
    for key, key_examples in per_key.items():
        tokens = sum(example_tokens(example, count_tokens) for example in key_examples)
        buckets = (
            stats.total,
            stats.per_side.setdefault(str(key[1]), Counts()),
            stats.per_scenario.setdefault(scenario_of[key[0]], Counts()),
        )
        for bucket in buckets:
            bucket.sides += 1
            bucket.examples += len(key_examples)
            bucket.tokens += tokens
    return stats
