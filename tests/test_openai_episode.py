"""Whole episodes against a real OpenAI-compatible server on loopback (llama-cpp-python's server
serving the embedded GGUF), including the server going away mid-episode."""

from __future__ import annotations

import pytest

from sotopia_pi.episode import EpisodeStatus
from sotopia_pi.runner import EpisodeRunner, EpisodeSetup, RunnerEvents, new_episode
from sotopia_pi.store import Store

from .factories import seed_store
from .servers import llama_server, start_llama_server

pytestmark = pytest.mark.slow


def test_whole_episode_through_the_openai_backend(store: Store):
    seed_store(store)
    with llama_server() as server:
        episode = new_episode(
            store,
            EpisodeSetup(
                scenario_id="bike-sale",
                agent_ids=("ines", "tomas"),
                agent_models=(server.model_name, server.model_name),
                judge_model=server.model_name,
                max_turns=4,
                live_eval=False,
            ),
        )
        runner = EpisodeRunner(store, episode.id)
        try:
            finished = runner.run()
        finally:
            runner.close()
    assert finished.status == EpisodeStatus.finished, finished.last_error
    turns = store.turns(episode.id)
    assert 1 <= len(turns) <= 4
    # llama-cpp-python's server sends no usage while streaming: only generated tokens are counted
    assert all(t.model == server.model_name and t.completion_tokens > 0 and t.latency_ms > 0 for t in turns)
    evaluation = store.terminal_evaluation(episode.id)
    assert evaluation is not None and evaluation.judge_model == server.model_name


def test_server_stopped_mid_episode_pauses_then_resumes_elsewhere(store: Store):
    seed_store(store)
    server = start_llama_server()
    try:
        episode = new_episode(
            store,
            EpisodeSetup(
                scenario_id="bike-sale",
                agent_ids=("ines", "tomas"),
                agent_models=(server.model_name, server.model_name),
                judge_model="",
                max_turns=6,
                stale_limit=0,
                live_eval=False,
            ),
        )

        class StopServerAfterTwoTurns(RunnerEvents):
            def turn_committed(self, turn):
                if turn.index == 1:
                    server.stop()

        runner = EpisodeRunner(store, episode.id, events=StopServerAfterTwoTurns())
        paused = runner.run()
        runner.close()
    finally:
        server.stop()
    if paused.status == EpisodeStatus.finished:
        pytest.skip(f"the model ended the episode before the server stopped: {paused.end_reason}")
    assert paused.status == EpisodeStatus.paused
    assert server.url in paused.last_error
    kept = store.turns(episode.id)
    assert len(kept) == 2

    with llama_server() as second:
        runner = EpisodeRunner(store, episode.id)
        runner.set_model(0, second.model_name)
        runner.set_model(1, second.model_name)
        try:
            finished = runner.run()
        finally:
            runner.close()
    assert finished.status == EpisodeStatus.finished, finished.last_error
    after = store.turns(episode.id)
    assert [t.model_dump() for t in after[:2]] == [t.model_dump() for t in kept]
    assert all(t.model == second.model_name for t in after[2:])
