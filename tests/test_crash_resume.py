"""Crash and resume, made deterministic: a process killed mid-episode and a server gone mid-episode.

Replay models and a scripted loopback server answer the same way every run, and the side that
keeps an episode open is a person whose next line never comes, so nothing here depends on a
race. The real-model versions are smoke tests in test_embedded_episode.py and
test_openai_episode.py.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from pathlib import Path

from sotopia_pi.episode import EpisodeStatus
from sotopia_pi.runner import EpisodeRunner, EpisodeSetup, RunnerEvents, new_episode
from sotopia_pi.store import Store

from .factories import action, seed_store
from .helpers import CLI_PROCESS, cli, replay_model, wait_for
from .servers import chat_chunks, chat_completion, scripted_chat_server

SIDE1_SPEECH = [action("speak", "Two-fifty, firm."), action("speak", "Look at the new chain.")]


def killed_mid_episode(store: Store, tmp_path: Path, max_turns: int = 6) -> tuple[str, list]:
    """A `run` whose side 1 replays and whose side 2 is a person on stdin: the person answers
    once, then the process waits for their second line and is killed there (SIGKILL, so the
    runner gets no chance to pause). Returns the episode id and the turns committed."""
    seed_store(store)
    side1 = replay_model(tmp_path / "side1.json", SIDE1_SPEECH)
    process = subprocess.Popen(
        [*CLI_PROCESS, "run", "--scenario", "bike_sale", "--agent1", side1, "--agent2", "human",
         "--judge", "", "--no-live-eval", "--max-turns", str(max_turns)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdin is not None
    process.stdin.write("How about 180?\n")
    process.stdin.flush()
    try:
        wait_for(lambda: any(r["turn_count"] >= 3 for r in store.episode_rows()) or process.poll() is not None,
                 "three committed turns (the person's second turn is next)")
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
    finally:
        process.kill()
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    (row,) = store.episode_rows()
    return row["id"], store.turns(row["id"])


def test_sigkill_mid_episode_loses_no_committed_turn_and_resume_finishes(store: Store, tmp_path: Path):
    episode_id, committed = killed_mid_episode(store, tmp_path)
    assert [(t.index, t.by_human, t.argument) for t in committed] == [
        (0, False, "Two-fifty, firm."), (1, True, "How about 180?"), (2, False, "Look at the new chain."),
    ]
    assert store.episode(episode_id).status != EpisodeStatus.finished

    side2 = replay_model(tmp_path / "side2.json", [action("speak", "Fine, 220."), action("leave")])
    result = cli("resume", episode_id, "--agent2", side2, "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "finished"
    after = store.turns(episode_id)
    assert [t.model_dump() for t in after[: len(committed)]] == [t.model_dump() for t in committed]
    assert [t.index for t in after] == list(range(6))
    assert [t.argument for t in after[3:]] == ["Fine, 220.", "Two-fifty, firm.", ""]
    assert after[-1].action_type.value == "leave" and after[-1].model == side2


def speaking_server(words: str):
    """A scripted OpenAI-compatible server whose model always says `words` (never leaves)."""
    answer = action("speak", words)

    def respond(request: dict, headers: dict):
        return 200, chat_chunks([answer]) if request.get("stream") else chat_completion(answer)

    return scripted_chat_server(respond)


def test_a_server_gone_mid_episode_pauses_it_and_another_finishes_it(store: Store):
    seed_store(store)
    first = contextlib.ExitStack()
    url = first.enter_context(speaking_server("Still thinking."))
    model = f"openai:scripted@{url}"
    episode = new_episode(store, EpisodeSetup(
        scenario_id="bike-sale", agent_ids=("ines", "tomas"), agent_models=(model, model),
        judge_model="", max_turns=6, stale_limit=0, live_eval=False,
    ))

    class StopServerAfterTwoTurns(RunnerEvents):
        def turn_committed(self, turn):
            if turn.index == 1:
                first.close()

    runner = EpisodeRunner(store, episode.id, events=StopServerAfterTwoTurns())
    try:
        paused = runner.run()
    finally:
        runner.close()
        first.close()
    assert paused.status == EpisodeStatus.paused
    assert url in paused.last_error
    kept = store.turns(episode.id)
    assert [t.argument for t in kept] == ["Still thinking."] * 2

    with speaking_server("Deal.") as second_url:
        runner = EpisodeRunner(store, episode.id)
        for side in (0, 1):
            runner.set_model(side, f"openai:scripted@{second_url}")
        try:
            finished = runner.run()
        finally:
            runner.close()
    assert finished.status == EpisodeStatus.finished, finished.last_error
    after = store.turns(episode.id)
    assert [t.model_dump() for t in after[:2]] == [t.model_dump() for t in kept]
    assert [t.argument for t in after[2:]] == ["Deal."] * 4
    assert all(second_url in t.model for t in after[2:])
