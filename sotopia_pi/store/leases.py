"""Episode leases: at most one runner plays an episode, in any process.

A runner takes the episode's lease (a row in `episode_leases`) before it changes anything and
renews it with a heartbeat while it plays. A second runner, in this process or another, is
refused with `EpisodeBusy`, which names the holder. A lease whose process is gone (same host,
pid no longer alive) or whose heartbeat stopped long ago is stale: the next runner takes it
over, and `reclaim_interrupted` marks episodes left `running` by a dead process as paused,
interrupted and resumable.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..episode import EpisodeStatus
from .errors import NotFound, StoreError

if TYPE_CHECKING:  # a Store calls reclaim_interrupted: importing it here would close a cycle
    from . import Store

HEARTBEAT_S = 5.0
STALE_AFTER_S = 30.0
INTERRUPTED_PREFIX = "interrupted: "

log = logging.getLogger(__name__)


class EpisodeBusy(StoreError):
    """Another runner holds the episode."""


@dataclass(frozen=True)
class Lease:
    episode_id: str
    token: str
    holder: str
    pid: int
    host: str
    acquired_at: str
    heartbeat_at: float

    def describe(self, now: float | None = None) -> str:
        age = max(0.0, (now or time.time()) - self.heartbeat_at)
        return (
            f"{self.holder} (pid {self.pid} on {self.host}, since {self.acquired_at}, "
            f"last heartbeat {age:.0f} s ago)"
        )

    def is_stale(self, now: float | None = None) -> bool:
        if (now or time.time()) - self.heartbeat_at > STALE_AFTER_S:
            return True
        return self.host == socket.gethostname() and not process_alive(self.pid)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs here (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def default_holder() -> str:
    """Who holds a lease, as a person would recognise it: the command that runs."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    command = next((arg for arg in sys.argv[1:2] if not arg.startswith("-")), "")
    return f"{program} {command}".strip()


def current(store: Store, episode_id: str) -> Lease | None:
    rows = store._query("SELECT * FROM episode_leases WHERE episode_id=?", (episode_id,))
    return _lease(rows[0]) if rows else None


def acquire(store: Store, episode_id: str, holder: str | None = None) -> Lease:
    """Take the episode's lease, or raise EpisodeBusy naming who holds it."""
    now = time.time()
    held = current(store, episode_id)
    if held is not None and not held.is_stale(now):
        raise _busy(held, now)
    lease = Lease(
        episode_id=episode_id,
        token=uuid.uuid4().hex,
        holder=holder or default_holder(),
        pid=os.getpid(),
        host=socket.gethostname(),
        acquired_at=datetime.now(UTC).isoformat(timespec="seconds"),
        heartbeat_at=now,
    )
    try:
        with store.transaction() as conn:
            if held is not None:  # stale: take it over, unless someone just did
                conn.execute(
                    "DELETE FROM episode_leases WHERE episode_id=? AND token=?", (episode_id, held.token)
                )
            conn.execute(
                "INSERT INTO episode_leases (episode_id, token, holder, pid, host, acquired_at, "
                "heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (lease.episode_id, lease.token, lease.holder, lease.pid, lease.host, lease.acquired_at, now),
            )
    except sqlite3.IntegrityError:
        winner = current(store, episode_id)
        if winner is None:  # the episode itself is gone
            raise NotFound(f"no episode with id {episode_id!r}") from None
        raise _busy(winner, now) from None
    return lease


def renew(store: Store, lease: Lease) -> bool:
    """Refresh the heartbeat; False when the lease is no longer ours (taken over as stale)."""
    with store.transaction() as conn:
        cursor = conn.execute(
            "UPDATE episode_leases SET heartbeat_at=? WHERE episode_id=? AND token=?",
            (time.time(), lease.episode_id, lease.token),
        )
    return cursor.rowcount == 1


def release(store: Store, lease: Lease) -> None:
    with store.transaction() as conn:
        conn.execute(
            "DELETE FROM episode_leases WHERE episode_id=? AND token=?", (lease.episode_id, lease.token)
        )


def reclaim_interrupted(store: Store) -> list[str]:
    """Mark episodes left `running` by a runner that is gone as paused and interrupted (so
    they list as resumable); returns their ids. A store that cannot be written is left as is."""
    now = time.time()
    reclaimed = []
    try:
        rows = store._query("SELECT id FROM episodes WHERE status = 'running'")
        for row in rows:
            held = current(store, row["id"])
            if held is not None and not held.is_stale(now):
                continue
            if _mark_interrupted(store, row["id"], held):
                reclaimed.append(row["id"])
    except sqlite3.OperationalError as error:  # read-only, locked for long: try again next time
        log.warning("interrupted episodes were not reclaimed: %s", error)
    return reclaimed


def _mark_interrupted(store: Store, episode_id: str, held: Lease | None) -> bool:
    who = f"the runner ({held.holder}, pid {held.pid} on {held.host})" if held else "its runner"
    with store.transaction() as conn:
        if held is not None:
            cursor = conn.execute(
                "DELETE FROM episode_leases WHERE episode_id=? AND token=?", (episode_id, held.token)
            )
            if cursor.rowcount != 1:
                return False  # someone took the lease over meanwhile
        elif conn.execute("SELECT 1 FROM episode_leases WHERE episode_id=?", (episode_id,)).fetchone():
            return False  # a runner took it meanwhile
    return pause_interrupted(store, episode_id, f"{who} stopped while playing it")


def pause_interrupted(store: Store, episode_id: str, what_happened: str) -> bool:
    """A `running` episode whose runner stopped becomes paused, its last error saying so."""
    episode = store.episode(episode_id)
    if episode.status != EpisodeStatus.running:
        return False
    episode.status = EpisodeStatus.paused
    episode.last_error = f"{INTERRUPTED_PREFIX}{what_happened}; resume it to continue"
    store.save_episode(episode)
    return True


class Heartbeat:
    """Renews a lease every HEARTBEAT_S seconds in a daemon thread; calls `on_lost` once if
    the lease was taken over (the runner must then stop writing)."""

    def __init__(self, store: Store, lease: Lease, on_lost: Callable[[], None], interval: float | None = None):
        self._store = store
        self._lease = lease
        self._on_lost = on_lost
        self._interval = interval or HEARTBEAT_S
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{lease.episode_id[:8]}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                if not renew(self._store, self._lease):
                    if not self._stopped.is_set():  # a beat that outlived `stop` must not stop a newer lease's runner
                        self._on_lost()
                    return
            except Exception as error:  # a busy or closed store: try again at the next beat
                log.warning("lease heartbeat failed: %s", error)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


def _busy(held: Lease, now: float) -> EpisodeBusy:
    return EpisodeBusy(
        f"episode {held.episode_id} is being played by {held.describe(now)}; "
        "wait for it to finish or pause, or stop that process"
    )


def _lease(row: sqlite3.Row) -> Lease:
    return Lease(
        episode_id=row["episode_id"],
        token=row["token"],
        holder=row["holder"],
        pid=row["pid"],
        host=row["host"],
        acquired_at=row["acquired_at"],
        heartbeat_at=row["heartbeat_at"],
    )
