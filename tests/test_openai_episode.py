"""Whole episodes against a real OpenAI-compatible server on loopback (llama-cpp-python's server
serving the embedded GGUF): a smoke test of the real model over HTTP. A server going away
mid-episode is tested deterministically, on a scripted server, in test_crash_resume.py."""

from __future__ import annotations

import pytest

from sotopia_pi.episode import EpisodeStatus
from sotopia_pi.runner import EpisodeRunner, EpisodeSetup, new_episode
from sotopia_pi.store import Store

from .factories import seed_store
from .servers import llama_server

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
