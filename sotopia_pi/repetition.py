"""Telling when a model's line repeats one already said in the episode (pure functions).

Small models fall into loops in long episodes: each side starts handing back the other's last
line, or its own, with a word changed. The runner asks the model again when a new line is an
echo (`echo_of`); these functions only measure.

A line echoes an earlier one when, word for word, it is mostly the same line
(difflib's ratio on the word sequences) or mostly made of the earlier line's phrases (the
share of its word trigrams found in the earlier line). Short lines ("Yes, fine.") are left
alone: people do repeat those.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from difflib import SequenceMatcher

from pydantic import BaseModel

from .episode import ActionType, Turn

ECHO_THRESHOLD = 0.7  # no line of the expert corpus reaches it; 14% of the adapter's lines did
MIN_WORDS = 4
_WORD = re.compile(r"[a-z0-9']+")


class Echo(BaseModel):
    """The earlier turn a line repeats, and how closely (0 to 1)."""

    turn_index: int
    similarity: float


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def _trigrams(tokens: Sequence[str]) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)}


def line_similarity(new: str, earlier: str) -> float:
    """How much `new` repeats `earlier`: the larger of their word-sequence ratio and the share
    of `new`'s word trigrams that `earlier` contains. 0 when `new` is shorter than MIN_WORDS."""
    new_words, earlier_words = words(new), words(earlier)
    if len(new_words) < MIN_WORDS or not earlier_words:
        return 0.0
    ratio = SequenceMatcher(None, new_words, earlier_words, autojunk=False).ratio()
    new_trigrams = _trigrams(new_words)
    shared = len(new_trigrams & _trigrams(earlier_words)) / len(new_trigrams) if new_trigrams else 0.0
    return max(ratio, shared)


def echo_of(argument: str, earlier: Sequence[Turn], threshold: float = ECHO_THRESHOLD) -> Echo | None:
    """The earlier turn (either side's) that `argument` repeats most closely, when it reaches
    `threshold`; None for a fresh line."""
    best: Echo | None = None
    for turn in earlier:
        if turn.action_type in (ActionType.none, ActionType.leave) or not turn.argument:
            continue
        similarity = line_similarity(argument, turn.argument)
        if similarity >= threshold and (best is None or similarity > best.similarity):
            best = Echo(turn_index=turn.index, similarity=round(similarity, 3))
    return best


def echo_share(turns: Sequence[Turn], threshold: float = ECHO_THRESHOLD) -> tuple[int, int]:
    """(echoing lines, lines checked) over an episode's turns with an argument, each against
    the turns before it: the figure benches print."""
    echoes = checked = 0
    for position, turn in enumerate(turns):
        if turn.action_type in (ActionType.none, ActionType.leave) or len(words(turn.argument)) < MIN_WORDS:
            continue
        checked += 1
        echoes += echo_of(turn.argument, turns[:position], threshold) is not None
    return echoes, checked
