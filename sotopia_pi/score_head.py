"""A score head: the judge model's reading of an episode turned into SOTOPIA-EVAL scores by a
linear map fitted to the expert's judgments (a reward model's linear head, on a frozen model).

The embedded judge (SmolLM2-135M) writes the rubric's format and on-topic reasons, but the
integers it writes do not rank episodes as the expert does. Its hidden state after reading the
terminal judge prompt does carry that information: a ridge regression per dimension, fitted on
the training split of the expert corpus, ranks the held-out sides (scripts/fit_judge_head.py).
With a head, the judge keeps its written reasons and takes each score from the head.

Pure numpy; the hidden state comes from a backend that implements `PromptStates`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, Field

from .backends import as_spec, shipped_adapter
from .episode import ChatMessage
from .errors import SotopiaError

log = logging.getLogger(__name__)


class ScoreHeadError(SotopiaError, ValueError):
    """A score head file is missing, damaged, or does not fit the judge's dimensions or model."""


@runtime_checkable
class PromptStates(Protocol):
    def prompt_state(self, messages: list[ChatMessage], max_tokens: int) -> np.ndarray:
        """The model's final hidden state after reading the chat prompt of `messages` (its last
        `max_tokens` tokens)."""
        ...


class DimensionHead(BaseModel):
    weights: list[float]
    bias: float
    minimum: int
    maximum: int


class ScoreHead(BaseModel):
    judge_model: str = Field(description="the judge model whose hidden states the head reads")
    prompt_tokens: int = Field(description="how many of the judge prompt's last tokens it reads")
    mean: list[float]
    scale: list[float]
    dimensions: dict[str, DimensionHead]
    ridge: float
    provenance: dict = Field(default_factory=dict)

    def predict(self, state: np.ndarray) -> dict[str, float]:
        """Each dimension's score as the head predicts it, unrounded."""
        if state.shape != (len(self.mean),):
            raise ScoreHeadError(f"the head reads {len(self.mean)} features, the model gave {state.shape}")
        standard = (state - np.asarray(self.mean)) / np.asarray(self.scale)
        return {name: float(standard @ np.asarray(head.weights) + head.bias) for name, head in self.dimensions.items()}

    def scores(self, state: np.ndarray) -> dict[str, int]:
        """Each dimension's score, rounded and kept inside its range."""
        predicted = self.predict(state)
        return {
            name: int(np.clip(round(value), head.minimum, head.maximum))
            for (name, head), value in zip(self.dimensions.items(), predicted.values())
        }


def fit_score_head(
    states: np.ndarray,
    targets: dict[str, np.ndarray],
    ranges: dict[str, tuple[int, int]],
    *,
    judge_model: str,
    prompt_tokens: int,
    ridge: float,
    provenance: dict | None = None,
) -> ScoreHead:
    """Ridge regression of each dimension's expert score on the standardized hidden states."""
    if len(states) < 2 or any(len(values) != len(states) for values in targets.values()):
        raise ScoreHeadError("a score head needs at least two examples, and a target for each")
    mean = states.mean(axis=0)
    scale = states.std(axis=0) + 1e-6
    standard = (states - mean) / scale
    gram = standard.T @ standard + ridge * np.eye(standard.shape[1])
    dimensions = {}
    for name, values in targets.items():
        centre = float(values.mean())
        weights = np.linalg.solve(gram, standard.T @ (values - centre))
        low, high = ranges[name]
        dimensions[name] = DimensionHead(weights=weights.tolist(), bias=centre, minimum=low, maximum=high)
    return ScoreHead(
        judge_model=judge_model,
        prompt_tokens=prompt_tokens,
        mean=mean.tolist(),
        scale=scale.tolist(),
        dimensions=dimensions,
        ridge=ridge,
        provenance=provenance or {},
    )


def spearman(xs, ys) -> float:
    """Spearman's rank correlation (ties share their mean rank); nan when either side is constant."""
    rx, ry = _ranks(np.asarray(xs, dtype=float)), _ranks(np.asarray(ys, dtype=float))
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for value in np.unique(values):  # ties share their mean rank
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


SHIPPED_HEAD_SUFFIX = ".head.json"


def shipped_score_head(judge_model: str) -> ScoreHead | None:
    """The head shipped beside the judge adapter a judge model names (models/adapters/
    NAME.head.json), or None; also None, with a warning, when the head was fitted on another
    version of that adapter (its provenance names the adapter file's SHA-256)."""
    spec = as_spec(judge_model)
    adapter = shipped_adapter(spec.adapter, spec.kind) if spec.kind == "embedded-base" and spec.adapter else None
    path = adapter.with_suffix(SHIPPED_HEAD_SUFFIX) if adapter is not None else None
    if adapter is None or path is None or not path.is_file():
        return None
    try:
        head = load_score_head(path)
    except ScoreHeadError as error:
        log.warning("judging without the score head: %s", error)
        return None
    fitted_on = head.provenance.get("judge_adapter_sha256")
    if fitted_on and fitted_on != hashlib.sha256(adapter.read_bytes()).hexdigest():
        log.warning("judging without the score head: %s was fitted on another version of %s", path, adapter)
        return None
    return head


def load_score_head(path: Path) -> ScoreHead:
    try:
        return ScoreHead.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise ScoreHeadError(f"cannot read the score head {path}: {error}") from None
