"""Judge training examples: the judge's prompt for one side of a judged episode, answered with the
terminal evaluation's scores and reasoning, exactly as the judge must answer.

The answer is written the way the grammar-constrained judge writes it: keys in sorted order (the
schema grammar orders object keys alphabetically), reasoning within the schema's length limit
(cut at a word boundary), so that what the adapter learns is what the runtime lets it say.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..dataset.frozen import FrozenEpisode
from ..episode import ChatMessage, DimensionScore
from ..judge import REASONING_MAX_CHARS, DimensionSet, judge_messages
from .examples import TrainingExample


def fit_reasoning(text: str, limit: int = REASONING_MAX_CHARS) -> str:
    """The reasoning cut to `limit` characters, at the end of a sentence or else of a word."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = text[:limit]
    sentence_end = max(head.rfind(". "), head.rfind("; "))
    if sentence_end >= limit // 2:
        return head[: sentence_end + 1]
    return head[: head.rfind(" ")].rstrip(",;:") if " " in head else head


def judge_answer(scores: dict[str, DimensionScore], dimensions: DimensionSet) -> str:
    names = sorted(d.name for d in dimensions.dimensions)
    return json.dumps(
        {name: {"reasoning": fit_reasoning(scores[name].reasoning), "score": scores[name].score} for name in names},
        ensure_ascii=False,
    )


def judge_examples(
    episodes: Iterable[FrozenEpisode], sides: Iterable[tuple[str, int]], dimensions: DimensionSet
) -> list[TrainingExample]:
    """One example per (episode, side) whose terminal evaluation scored that side on every
    dimension; episodes frozen without their profiles are skipped (the prompt needs them)."""
    by_id = {frozen.id: frozen for frozen in episodes}
    wanted = {d.name for d in dimensions.dimensions}
    examples = []
    for episode_id, side in sides:
        frozen = by_id.get(episode_id)
        if frozen is None or frozen.evaluation is None or frozen.scenario is None or len(frozen.characters) != 2:
            continue
        verdict = frozen.evaluation.agents[side]
        if not verdict.ok or set(verdict.scores) < wanted:
            continue
        characters = (frozen.characters[0], frozen.characters[1])
        messages = judge_messages(frozen.scenario, characters, frozen.turns, side, dimensions)
        messages.append(ChatMessage(role="assistant", content=judge_answer(verdict.scores, dimensions)))
        examples.append(
            TrainingExample(
                id=f"judge-{episode_id}-{side}",
                episode_id=episode_id,
                side=side,
                messages=messages,
                targets=[len(messages) - 1],
            )
        )
    return examples
