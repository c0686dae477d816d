"""The judge's score head: ridge fit, prediction inside each dimension's range, the shipped file,
and a Judge that takes its scores from the head while keeping the model's written reasons."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from sotopia_pi.backends import BackendError, Completion
from sotopia_pi.episode import ChatMessage
from sotopia_pi.judge import Judge, load_dimension_set
from sotopia_pi.score_head import (
    ScoreHead,
    ScoreHeadError,
    fit_score_head,
    load_score_head,
    shipped_score_head,
    spearman,
)

DIMENSIONS = load_dimension_set("sotopia")
RANGES = {d.name: (d.low, d.high) for d in DIMENSIONS.dimensions}


def synthetic_head(rng: np.random.Generator, features: int = 12) -> tuple[ScoreHead, np.ndarray, np.ndarray]:
    """A head fitted where each dimension is a noisy linear function of the features."""
    states = rng.standard_normal((200, features)) * 3 + 5
    truth = rng.standard_normal((features, len(RANGES)))
    raw = (states - 5) @ truth
    targets = {name: np.clip(raw[:, i], low, high) for i, (name, (low, high)) in enumerate(RANGES.items())}
    head = fit_score_head(
        states[:150], {k: v[:150] for k, v in targets.items()}, RANGES, judge_model="m", prompt_tokens=64, ridge=1.0
    )
    return head, states[150:], np.array([v[150:] for v in targets.values()]).T


def test_a_fitted_head_ranks_unseen_examples_and_stays_inside_each_range():
    head, states, expected = synthetic_head(np.random.default_rng(0))
    predicted = np.array([[head.scores(s)[name] for name in RANGES] for s in states])
    assert spearman(expected.mean(axis=1), predicted.mean(axis=1)) > 0.8
    for i, (low, high) in enumerate(RANGES.values()):
        assert predicted[:, i].min() >= low and predicted[:, i].max() <= high
    assert all(isinstance(v, int) for v in head.scores(states[0]).values())


def test_spearman_handles_ties_and_constants():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [1, 1, 2, 2]) == pytest.approx(1.0)
    assert np.isnan(spearman([1, 2, 3], [5, 5, 5]))


def test_a_state_of_the_wrong_size_and_a_damaged_file_are_clear_errors(tmp_path: Path):
    head, states, _ = synthetic_head(np.random.default_rng(1))
    with pytest.raises(ScoreHeadError, match="reads 12 features"):
        head.scores(np.zeros(5))
    broken = tmp_path / "head.json"
    broken.write_text('{"judge_model": "m"')
    with pytest.raises(ScoreHeadError, match="cannot read the score head"):
        load_score_head(broken)
    saved = tmp_path / "ok.json"
    saved.write_text(json.dumps(head.model_dump()))
    assert load_score_head(saved).scores(states[0]) == head.scores(states[0])


def test_only_the_shipped_judge_adapter_gets_the_shipped_head():
    assert shipped_score_head("embedded-base") is None
    assert shipped_score_head("openai:gpt-4o") is None
    assert shipped_score_head("embedded-base+adapter=embedded-bc") is None
    head = shipped_score_head("embedded-base+adapter=embedded-judge")
    assert head is not None and set(head.dimensions) == set(RANGES)
    assert head.judge_model == "embedded-base+adapter=embedded-judge" and len(head.mean) == 576
    assert head.provenance["held-out"]["spearman_overall"] >= 0.5


def test_a_head_fitted_on_another_version_of_the_judge_adapter_is_not_used(tmp_path: Path, monkeypatch):
    from sotopia_pi import paths

    shipped = paths.REPO_ROOT / "models" / "adapters"
    fake_root = tmp_path / "repo"
    (fake_root / "models" / "adapters").mkdir(parents=True)
    (fake_root / "models" / "adapters" / "embedded-judge.gguf").write_bytes(b"retrained since")
    head = json.loads((shipped / "embedded-judge.head.json").read_text())
    (fake_root / "models" / "adapters" / "embedded-judge.head.json").write_text(json.dumps(head))
    monkeypatch.setattr(paths, "REPO_ROOT", fake_root)
    assert shipped_score_head("embedded-base+adapter=embedded-judge") is None


class StatefulReplay:
    """A judge backend that writes a fixed answer and reads a hidden state from the prompt."""

    name = "fake-judge"

    def __init__(self, answer: str, state: np.ndarray | None) -> None:
        self.answer = answer
        self.state = state
        self.read: list[list[ChatMessage]] = []

    def complete(self, messages, *, schema=None, max_tokens=256, temperature=0.7, on_token=None, cancel=None):
        return Completion(text=self.answer)

    def prompt_state(self, messages: list[ChatMessage], max_tokens: int) -> np.ndarray:
        self.read.append(messages)
        if self.state is None:
            raise BackendError("no state")
        return self.state

    def close(self) -> None:
        pass


def written_answer(score: int) -> str:
    return json.dumps(
        {name: {"reasoning": f"why {name}", "score": min(max(score, lo), hi)} for name, (lo, hi) in RANGES.items()}
    )


@pytest.fixture
def episode_parts(store):
    from sotopia_pi.library import ensure_library

    ensure_library(store)
    scenario = store.scenarios()[0]
    characters = tuple(store.characters()[:2])
    return scenario, characters


def test_the_judge_takes_scores_from_the_head_and_reasons_from_the_model(episode_parts):
    head, states, _ = synthetic_head(np.random.default_rng(2))
    backend = StatefulReplay(written_answer(3), states[0])
    judge = Judge(backend, DIMENSIONS, score_head=head)  # type: ignore[arg-type]
    evaluation = judge.evaluate("e1", *episode_parts, [], kind="terminal", cancel=threading.Event())
    expected = head.scores(states[0])
    for agent in evaluation.agents:
        assert {k: v.score for k, v in agent.scores.items()} == expected
        assert agent.scores["goal"].reasoning == "why goal"
        assert agent.overall == pytest.approx(sum(expected.values()) / len(expected))
    assert len(backend.read) == 2  # both sides' prompts were read

    unwritten = Judge(StatefulReplay("not json", states[1]), DIMENSIONS, score_head=head)  # type: ignore[arg-type]
    agent = unwritten.evaluate("e1", *episode_parts, [], kind="terminal").agents[0]
    assert (
        agent.ok
        and agent.scores["goal"].reasoning == ""
        and agent.scores["goal"].score == head.scores(states[1])["goal"]
    )

    stateless = Judge(StatefulReplay(written_answer(2), None), DIMENSIONS, score_head=head)  # type: ignore[arg-type]
    agent = stateless.evaluate("e1", *episode_parts, [], kind="terminal").agents[0]
    assert agent.ok and agent.scores["believability"].score == 2  # the head failed: the written scores stand


def test_a_head_that_does_not_fit_the_dimensions_is_not_used(episode_parts):
    head, states, _ = synthetic_head(np.random.default_rng(3))
    head.dimensions.pop("goal")
    judge = Judge(StatefulReplay(written_answer(4), states[0]), DIMENSIONS, score_head=head)  # type: ignore[arg-type]
    assert judge.score_head is None
    agent = judge.evaluate("e1", *episode_parts, [], kind="terminal").agents[0]
    assert agent.scores["believability"].score == 4
