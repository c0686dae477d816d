"""Two slips of small models the runner asks again for (pure functions; they only measure).

Echoes (`echo_of`): in long episodes each side starts handing back the other's last line, or its
own, with a word changed.

A line echoes an earlier one when, word for word, it is mostly the same line
(difflib's ratio on the word sequences) or mostly made of the earlier line's phrases (the
share of its word trigrams found in the earlier line). Short lines ("Yes, fine.") are left
alone: people do repeat those.

Role slips (`role_slip`): a side speaks to itself by its own first name ("Thanks, Lucia." said by
Lucia) or calls itself by the other's ("I'm Finnegan" said by Gwen). Introductions ("Sol
Ferreira, from the ninth floor", "Samir, please") are not slips.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from difflib import SequenceMatcher

from pydantic import BaseModel

from .episode import ActionType, Turn

ECHO_THRESHOLD = 0.7  # no line of the expert corpus reaches it; 13% of the adapter's lines did
MIN_WORDS = 4
_WORD = re.compile(r"[a-z0-9']+")
_OPENERS = r"(?:hey|hi|hello|thanks|thank you|cheers|dear|oh|ah|look|listen|sorry|please|yes|no|okay|ok|right|well)"


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


def role_slip(argument: str, own_name: str, other_name: str) -> str | None:
    """What is out of role in `argument`, spoken by `own_name` to `other_name` (full names), or
    None. A first name both sides share is never a slip."""
    own, other = (own_name.split() or [""])[0], (other_name.split() or [""])[0]
    if not own or not other or own.lower() == other.lower():
        return None
    text, mine, theirs = argument.replace("\u2019", "'"), re.escape(own), re.escape(other)
    if re.search(rf"\b(?:i'm|i am|my name is|my name's)\s+{theirs}\b", text, re.IGNORECASE):
        return f"calls itself {other}"
    introduction = r"(?!(?:\s+[\w'-]+)?,?\s+from\b)"  # "Hi, Sol Ferreira from the ninth floor"
    if (
        re.search(rf"\b{_OPENERS},?\s+{mine}\b{introduction}", text, re.IGNORECASE)
        or re.search(rf"(?<!\bme),\s*{mine}\s*[.!?]", text)  # but "It's me, Lucia."
        or re.search(rf"^{mine},\s+(?!from\b|please\b)", text)
    ):
        return f"speaks to itself by name ({own})"
    return None
