"""Training examples from a snapshot, in two layouts, and their tokenization. Pure functions.

`turn` layout (SOTOPIA-pi's recipe): one example per answer: the messages the agent was given at
that turn, then its action; the loss covers the action only.

`conversation` layout (the default): an agent's prompt only ever grows (prompts.messages_for_turn),
so the per-turn examples of one side of one episode are prefixes of a single conversation: the
last turn's prompt followed by its answer holds every earlier prompt and answer. Training on
that conversation once, with the loss on every answer of the side, gives each answer exactly the
context it had as a per-turn example (causal attention never looks ahead), so the per-answer
losses are the same while the shared prefix is computed once instead of once per answer.
Examples whose prompts do not chain (episodes played with an older prompt format, or a curator
edit that changed what a later prompt shows) stay per-turn examples.

Tokenization renders the whole text with the tokenizer's chat template and marks as targets the
tokens inside each target answer's span (its content and the end-of-turn token), found by
rendering prefixes of the conversation; ChatML-style templates render a conversation's prefix
as a prefix of its text, which is checked rather than assumed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..dataset.examples import SftExample
from ..episode import ChatMessage
from ..errors import SotopiaError

Layout = Literal["conversation", "turn"]


class TrainingExample(BaseModel):
    """One sequence to train on: messages, and which assistant messages carry the loss."""

    id: str
    episode_id: str
    side: int
    messages: list[ChatMessage]
    targets: list[int] = Field(description="indices into messages of the assistant answers to learn")

    @property
    def answers(self) -> int:
        return len(self.targets)


class TokenizedExample(BaseModel):
    id: str
    episode_id: str
    input_ids: list[int]
    completion_mask: list[int]
    answer_spans: list[tuple[int, int]] = Field(description="[start, end) token range of each target answer")

    @property
    def target_tokens(self) -> int:
        return sum(self.completion_mask)


class TemplateError(SotopiaError, ValueError):
    """The chat template does not render a conversation's prefix as a prefix of its text."""


def per_turn_examples(examples: Iterable[SftExample]) -> list[TrainingExample]:
    return [
        TrainingExample(
            id=example.id,
            episode_id=example.episode_id,
            side=example.side,
            messages=[*example.prompt, ChatMessage(role="assistant", content=example.completion)],
            targets=[len(example.prompt)],
        )
        for example in examples
    ]


def _extends(longer: Sequence[ChatMessage], shorter: Sequence[ChatMessage]) -> bool:
    return len(longer) > len(shorter) and list(longer[: len(shorter)]) == list(shorter)


def conversation_examples(examples: Iterable[SftExample]) -> list[TrainingExample]:
    """Merge each side's chained per-turn examples into one conversation (see the module doc)."""
    merged: list[TrainingExample] = []
    for group in _groups_by_side(examples):
        current: TrainingExample | None = None
        for item in per_turn_examples(group):
            if current is not None and _extends(item.messages, current.messages):
                current = TrainingExample(
                    id=current.id,
                    episode_id=current.episode_id,
                    side=current.side,
                    messages=item.messages,
                    targets=[*current.targets, item.targets[-1]],
                )
                continue
            if current is not None:
                merged.append(current)
            current = item
        if current is not None:
            merged.append(current)
    return merged


def _groups_by_side(examples: Iterable[SftExample]) -> list[list[SftExample]]:
    groups: dict[tuple[str, int], list[SftExample]] = {}
    for example in examples:
        groups.setdefault((example.episode_id, example.side), []).append(example)
    return [sorted(group, key=lambda e: e.turn) for group in groups.values()]


def build_training_examples(examples: Iterable[SftExample], layout: Layout = "conversation") -> list[TrainingExample]:
    examples = list(examples)
    return conversation_examples(examples) if layout == "conversation" else per_turn_examples(examples)


def split_by_episode(
    examples: Sequence[TrainingExample], heldout_fraction: float, seed: int = 0
) -> tuple[list[TrainingExample], list[TrainingExample]]:
    """Train and held-out examples, split by episode (never by turn) with a stable hash, so the
    same snapshot and seed always give the same split. At least one episode stays for training."""
    episodes = sorted({example.episode_id for example in examples})
    if heldout_fraction <= 0 or len(episodes) < 2:
        return list(examples), []
    ranked = sorted(episodes, key=lambda e: hashlib.sha256(f"{seed}:{e}".encode()).hexdigest())
    count = min(len(episodes) - 1, max(1, round(len(episodes) * heldout_fraction)))
    heldout = set(ranked[:count])
    return (
        [example for example in examples if example.episode_id not in heldout],
        [example for example in examples if example.episode_id in heldout],
    )


# -- tokenization ---------------------------------------------------------------------------


def _render(tokenizer: Any, messages: Sequence[ChatMessage], *, generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages],
        tokenize=False,
        add_generation_prompt=generation_prompt,
    )


def answer_char_spans(tokenizer: Any, example: TrainingExample) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and, for each target answer, its [start, end) character span: from the
    end of the generation prompt before it to the end of the answer's turn (content plus the
    end-of-turn marker, without the newline the template adds after it)."""
    text = _render(tokenizer, example.messages)
    spans = []
    for index in example.targets:
        before = _render(tokenizer, example.messages[:index], generation_prompt=True)
        through = _render(tokenizer, example.messages[: index + 1])
        if not text.startswith(before) or not text.startswith(through) or not through.startswith(before):
            raise TemplateError(f"example {example.id}: the chat template does not render prefixes as prefixes")
        spans.append((len(before), len(through.rstrip("\n"))))
    return text, spans


def tokenize_example(tokenizer: Any, example: TrainingExample, max_length: int | None = None) -> TokenizedExample | None:
    """Token ids and a 0/1 mask of the tokens that carry the loss. A conversation longer than
    `max_length` is cut after its last answer that fits; None if not even one answer fits."""
    text, spans = answer_char_spans(tokenizer, example)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = encoded["input_ids"]
    offsets: list[tuple[int, int]] = encoded["offset_mapping"]
    mask = [0] * len(ids)
    token_spans = []
    for start, end in spans:
        inside = [i for i, (a, b) in enumerate(offsets) if a >= start and b <= end and b > a]
        if not inside:
            continue
        for i in inside:
            mask[i] = 1
        token_spans.append((inside[0], inside[-1] + 1))
    if max_length is not None and len(ids) > max_length:
        fitting = [span for span in token_spans if span[1] <= max_length]
        if not fitting:
            return None
        cut = fitting[-1][1]
        ids, mask, token_spans = ids[:cut], mask[:cut], fitting
    if not token_spans:
        return None
    return TokenizedExample(
        id=example.id, episode_id=example.episode_id, input_ids=ids, completion_mask=mask, answer_spans=token_spans
    )


def tokenize_examples(
    tokenizer: Any, examples: Iterable[TrainingExample], max_length: int | None = None
) -> tuple[list[TokenizedExample], int]:
    """Tokenized examples and how many were dropped because not one answer fits in max_length."""
    kept, dropped = [], 0
    for example in examples:
        tokenized = tokenize_example(tokenizer, example, max_length)
        if tokenized is None:
            dropped += 1
        else:
            kept.append(tokenized)
    return kept, dropped
