"""Episode leases: one runner per episode across processes; a dead runner's episode shows as
interrupted and resumable."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from sotopia_pi.backends.replay import ReplayBackend
from sotopia_pi.cli import app
from sotopia_pi.episode import EpisodeStatus
from sotopia_pi.episode_list import EpisodeFilter, list_episodes
from sotopia_pi.runner import EpisodeRunner, EpisodeSetup, new_episode
from sotopia_pi.store import Store, leases

from .factories import action, seed_store
from .helpers import wait_for


def new_paused_episode(store: Store) -> str:
    seed_store(store)
    setup = EpisodeSetup(
        scenario_id="bike-sale", agent_ids=("ines", "tomas"), agent_models=("replay:a", "replay:b"),
        judge_model="", live_eval=False,
    )
    return new_episode(store, setup).id


def replay_runner(store: Store, episode_id: str, outputs0: list[str], outputs1: list[str], **kw) -> EpisodeRunner:
    return EpisodeRunner(
        store, episode_id, backends={0: ReplayBackend(outputs0, "a"), 1: ReplayBackend(outputs1, "b")}, **kw
    )


@pytest.fixture
def other_process():
    """A live process that is not us, to stand for another runner."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def hold_lease(store: Store, episode_id: str, pid: int, heartbeat_age: float = 0.0, holder="sotopia-pi resume"):
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO episode_leases VALUES (?, 'their-token', ?, ?, ?, '2026-01-01T00:00:00', ?)",
            (episode_id, holder, pid, leases.socket.gethostname(), time.time() - heartbeat_age),
        )


def test_a_second_runner_is_refused_naming_the_holder(store: Store):
    episode_id = new_paused_episode(store)
    first = replay_runner(store, episode_id, [action("speak", "hi")], [], holder="the TUI")
    first.claim()
    second = replay_runner(store, episode_id, [action("leave")], [])
    with pytest.raises(leases.EpisodeBusy, match="being played by the TUI"):
        second.run()
    assert store.turns(episode_id) == []  # the loser changed nothing
    assert store.episode(episode_id).status == EpisodeStatus.paused
    first.close()
    assert leases.current(store, episode_id) is None
    second.run()
    assert len(store.turns(episode_id)) >= 1


def test_a_lease_is_held_while_playing_and_let_go_after(store: Store):
    episode_id = new_paused_episode(store)
    seen: list[leases.Lease | None] = []

    class Backend(ReplayBackend):
        def complete(self, messages, **kw):
            seen.append(leases.current(store, episode_id))
            return super().complete(messages, **kw)

    runner = EpisodeRunner(
        store, episode_id,
        backends={0: Backend([action("speak", "hi"), action("leave")]), 1: Backend([action("speak", "no")])},
        holder="test",
    )
    assert runner.run().status == EpisodeStatus.finished
    assert seen and all(lease is not None and lease.holder == "test" for lease in seen)
    assert leases.current(store, episode_id) is None


def test_a_dead_processs_lease_is_taken_over_and_its_episode_shows_interrupted(store: Store):
    episode_id = new_paused_episode(store)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    episode = store.episode(episode_id)
    episode.status = EpisodeStatus.running
    store.save_episode(episode)
    hold_lease(store, episode_id, dead.pid)
    rows = store.episode_rows(status="paused")
    assert [row["id"] for row in rows] == [episode_id]
    episode = store.episode(episode_id)
    assert episode.last_error.startswith("interrupted: the runner (sotopia-pi resume, pid")
    assert [row.id for row in list_episodes(store, EpisodeFilter(status=EpisodeStatus.paused))] == [episode_id]
    runner = replay_runner(store, episode_id, [action("leave")], [])
    assert runner.run().status == EpisodeStatus.finished


def test_a_running_episode_with_a_live_holder_is_left_alone(store: Store, other_process: int):
    episode_id = new_paused_episode(store)
    episode = store.episode(episode_id)
    episode.status = EpisodeStatus.running
    store.save_episode(episode)
    hold_lease(store, episode_id, other_process)
    assert store.episode_rows(status="paused") == []
    assert store.episode(episode_id).status == EpisodeStatus.running


def test_a_silent_heartbeat_goes_stale_even_if_the_pid_lives(store: Store, other_process: int):
    episode_id = new_paused_episode(store)
    hold_lease(store, episode_id, other_process, heartbeat_age=leases.STALE_AFTER_S + 5)
    lease = leases.acquire(store, episode_id, "me")
    assert leases.current(store, episode_id).token == lease.token


def test_running_without_any_lease_is_interrupted_when_the_store_opens(isolated_home):
    with Store() as store:
        episode_id = new_paused_episode(store)
        episode = store.episode(episode_id)
        episode.status = EpisodeStatus.running
        store.save_episode(episode)
    with Store() as reopened:
        assert reopened.episode(episode_id).status == EpisodeStatus.paused
        assert reopened.episode(episode_id).last_error.startswith(leases.INTERRUPTED_PREFIX)


def test_a_runner_whose_lease_was_taken_over_stops_writing(store: Store, monkeypatch):
    monkeypatch.setattr(leases, "HEARTBEAT_S", 0.05)
    episode_id = new_paused_episode(store)
    taken = threading.Event()
    release_turn = threading.Event()

    class Slow(ReplayBackend):
        def complete(self, messages, **kw):
            taken.set()
            release_turn.wait(5)
            return super().complete(messages, **kw)

    runner = EpisodeRunner(store, episode_id, backends={0: Slow([action("speak", "hi")] * 5), 1: Slow([action("speak", "yo")] * 5)})
    thread = threading.Thread(target=runner.run)
    thread.start()
    assert taken.wait(5)
    with store.transaction() as conn:  # another runner took the episode over
        conn.execute("UPDATE episode_leases SET token='thief' WHERE episode_id=?", (episode_id,))
    try:
        wait_for(runner._lease_lost.is_set, "the runner to notice its lease was taken", timeout=5)
    finally:
        release_turn.set()
    thread.join(10)
    assert runner._lease_lost.is_set()
    assert len(store.turns(episode_id)) <= 1
    assert store.episode(episode_id).status == EpisodeStatus.running  # as the thief left it


def test_cli_resume_is_refused_while_another_process_plays_it(store: Store, other_process: int, tmp_path):
    episode_id = new_paused_episode(store)
    hold_lease(store, episode_id, other_process)
    before = store.episode(episode_id)
    leave = tmp_path / "leave.json"
    leave.write_text(json.dumps([action("leave")]), encoding="utf-8")
    result = CliRunner().invoke(app, ["resume", episode_id, "--agent1", f"replay:{leave}"])
    assert result.exit_code == 1
    assert f"episode {episode_id} is being played by sotopia-pi resume (pid {other_process}" in result.stderr
    assert "Traceback" not in result.output
    after = store.episode(episode_id)
    assert after.agent_models == before.agent_models and after.status == before.status


def test_cli_run_killed_by_sigterm_leaves_the_episode_paused(store: Store, tmp_path):
    seed_store(store)
    slow = tmp_path / "slow.py"
    # sides that never answer: the process is waiting in a model call when the signal comes
    slow.write_text(
        "import sys, time\n"
        "from sotopia_pi.backends.replay import ReplayBackend\n"
        "ReplayBackend.from_file = classmethod(lambda cls, path: cls([], name=path))\n"
        "ReplayBackend.complete = lambda self, *a, **k: time.sleep(60)\n"
        "from sotopia_pi.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    process = subprocess.Popen(
        [sys.executable, str(slow), "run", "--scenario", "bike_sale", "--agent1", "replay:x",
         "--agent2", "replay:y", "--judge", "", "--no-live-eval", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for(lambda: bool(store.episode_rows(status="running")), "the run to start", timeout=30)
    process.terminate()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "sotopia-pi resume" in stderr
    (row,) = store.episode_rows(status="paused")
    assert store.episode(row["id"]).last_error.startswith(leases.INTERRUPTED_PREFIX)
    assert leases.current(store, row["id"]) is None
