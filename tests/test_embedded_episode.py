"""Whole episodes on the real embedded model (SmolLM2-135M in llama.cpp), through the CLI.

These are the checks a user would make: a SOTOPIA-hard scenario plays to the end with per-turn
timings and seven in-range terminal scores per agent, and an episode killed mid-run (the kill is
deterministic, see test_crash_resume.py) is played to the end by the real model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sotopia_pi.backends import preset_for
from sotopia_pi.store import Store

from .helpers import cli_process as cli
from .test_crash_resume import killed_mid_episode

pytestmark = pytest.mark.slow

HARD_SCENARIO = "01H7VFHN5WVC5HKKVBHZBA553R"  # game_winning, SOTOPIA-hard
RANGES = {
    "believability": (0, 10),
    "relationship": (-5, 5),
    "knowledge": (0, 10),
    "secret": (-10, 0),
    "social_rules": (-10, 0),
    "financial_and_material_benefits": (-5, 5),
    "goal": (0, 10),
}


@pytest.fixture
def imported(sotopia_dir: Path, isolated_home: Path) -> Path:
    report = json.loads(cli("import-sotopia", str(sotopia_dir), "--json").stdout)
    assert report["errors"] == []
    return isolated_home


def test_hard_scenario_runs_to_the_end_with_scores_in_range(imported: Path):
    result = cli(
        "run", "--scenario", HARD_SCENARIO, "--agent1", "embedded", "--agent2", "embedded",
        "--judge", "embedded", "--max-turns", "8", "--no-live-eval", "--json",
    )
    episode = json.loads(result.stdout)
    assert episode["status"] == "finished"
    assert 1 <= len(episode["turns"]) <= 8
    assert [t["index"] for t in episode["turns"]] == list(range(len(episode["turns"])))
    for turn in episode["turns"]:
        assert turn["model"] == preset_for("embedded")  # written out: the shipped adapter, if any
        assert turn["latency_ms"] > 0 and turn["prompt_tokens"] > 0
        assert turn["action_type"] in {"none", "speak", "non-verbal communication", "action", "leave"}
    assert any(t["cached_tokens"] > 0 for t in episode["turns"][2:]) or len(episode["turns"]) <= 2
    evaluation = episode["evaluation"]
    assert evaluation["kind"] == "terminal" and evaluation["judge_model"] == preset_for("embedded", "judge")
    for agent in evaluation["agents"]:
        if "failure" in agent:  # a failure is allowed, a made-up score is not
            assert agent["failure"] and "scores" not in agent
            continue
        assert set(agent["scores"]) == set(RANGES)
        for name, (low, high) in RANGES.items():
            assert low <= agent["scores"][name]["score"] <= high
        mean = sum(s["score"] for s in agent["scores"].values()) / 7
        assert agent["overall"] == pytest.approx(mean, abs=1e-3)
    assert "turn  0" in result.stderr  # progress went to stderr, stdout is pure JSON


def test_real_models_resume_an_episode_killed_mid_run(store: Store, tmp_path: Path):
    """Smoke test: the kill is made deterministic (test_crash_resume.py); here the embedded
    model takes over both sides of the killed episode and plays it to the end."""
    episode_id, committed = killed_mid_episode(store, tmp_path)
    result = cli("resume", episode_id, "--agent1", "embedded", "--agent2", "embedded", "--json")
    document = json.loads(result.stdout)
    assert document["status"] == "finished"
    after = store.turns(episode_id)
    assert [t.model_dump() for t in after[: len(committed)]] == [t.model_dump() for t in committed]
    assert [t.index for t in after] == list(range(len(after)))
    assert all(t.model == preset_for("embedded") for t in after[len(committed):])
