"""Whole episodes on the real embedded model (SmolLM2-135M in llama.cpp), through the CLI.

These are the checks a user would make: a SOTOPIA-hard scenario plays to the end with per-turn
timings and seven in-range terminal scores per agent, and a process killed with SIGKILL
mid-episode loses no committed turn and resumes to the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sotopia_pi.backends import preset_for

from sotopia_pi.episode import EpisodeStatus
from sotopia_pi.store import Store

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "from sotopia_pi.cli import main; main()"]
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


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, env=os.environ.copy())
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr[-2000:]}")
    return result


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


def test_sigkill_mid_episode_loses_nothing_and_resume_finishes(imported: Path):
    process = subprocess.Popen(
        [*CLI, "run", "--scenario", HARD_SCENARIO, "--max-turns", "8", "--no-live-eval", "--judge", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    store = Store()
    deadline = time.monotonic() + 300
    committed: list = []
    while time.monotonic() < deadline and process.poll() is None:
        rows = store.episode_rows()
        if rows and rows[0]["turn_count"] >= 2:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait(30)
    rows = store.episode_rows()
    assert rows, process.stderr.read()
    episode_id = rows[0]["id"]
    committed = store.turns(episode_id)
    if store.episode(episode_id).status == EpisodeStatus.finished:
        pytest.skip("the model ended the episode before it could be killed")
    assert process.returncode == -signal.SIGKILL
    assert len(committed) >= 2

    result = cli("resume", episode_id, "--json")
    document = json.loads(result.stdout)
    assert document["status"] == "finished"
    after = store.turns(episode_id)
    assert [t.model_dump() for t in after[: len(committed)]] == [t.model_dump() for t in committed]
    assert [t.index for t in after] == list(range(len(after)))
