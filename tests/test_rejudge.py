"""`sotopia-pi judge EPISODE`: a failed official score is judged again, the failure kept."""

from __future__ import annotations

import json

from sotopia_pi.store import Store

from .factories import action, judge_answer, seed_store
from .helpers import cli


def finished_with_a_failed_judge(store: Store, replay) -> str:
    seed_store(store)
    result = cli(
        "run", "--scenario", "bike_sale", "--agent1", replay("a", [action("leave")]),
        "--agent2", replay("b", []), "--judge", replay("down", []), "--no-live-eval", "--json",
    )
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "finished"
    assert all("failure" in agent for agent in document["evaluation"]["agents"])
    return document["id"]


def test_a_failed_terminal_evaluation_is_judged_again_and_the_failure_kept(store: Store, replay):
    episode_id = finished_with_a_failed_judge(store, replay)
    result = cli("judge", episode_id[:20], "--judge", replay("up", [judge_answer(), judge_answer()]), "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert all(agent["overall"] is not None for agent in document["evaluation"]["agents"])
    assert "1 earlier terminal evaluation(s) kept" in result.stderr
    terminal = store.evaluations(episode_id, kind="terminal")
    assert [e.ok for e in terminal] == [False, True]
    assert store.terminal_evaluation(episode_id).ok
    assert store.episode(episode_id).judge_model.startswith("replay:") and "down" in store.episode(episode_id).judge_model


def test_a_judge_that_fails_again_is_recorded_and_exits_2(store: Store, replay):
    episode_id = finished_with_a_failed_judge(store, replay)
    result = cli("judge", episode_id, "--judge", replay("still-down", []))
    assert result.exit_code == 2
    assert "the judge failed again" in result.stderr and "Traceback" not in result.output
    assert [e.ok for e in store.evaluations(episode_id, kind="terminal")] == [False, False]


def test_an_episode_with_a_good_score_needs_force(store: Store, replay):
    episode_id = finished_with_a_failed_judge(store, replay)
    assert cli("judge", episode_id, "--judge", replay("up", [judge_answer(), judge_answer()])).exit_code == 0
    refused = cli("judge", episode_id, "--judge", replay("up2", [judge_answer(), judge_answer()]))
    assert refused.exit_code == 1 and "already has an official score; pass --force" in refused.stderr
    forced = cli("judge", episode_id, "--force", "--judge", replay("up3", [judge_answer(), judge_answer()]))
    assert forced.exit_code == 0, forced.stderr
    assert len(store.evaluations(episode_id, kind="terminal")) == 3


def test_an_unfinished_episode_is_refused(store: Store, replay):
    seed_store(store)
    result = cli(
        "run", "--scenario", "bike_sale", "--agent1", replay("a", [action("speak", "hi")]),
        "--agent2", replay("b", []), "--judge", "", "--json",
    )
    episode_id = json.loads(result.stdout)["id"]
    refused = cli("judge", episode_id)
    assert refused.exit_code == 1 and "is paused; only a finished episode" in refused.stderr
    assert cli("judge", "no-such-episode").exit_code == 1
