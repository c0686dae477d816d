"""Key-to-screen latency of the TUI while the embedded model streams.

Runs the real app (`sotopia-pi` with no arguments) in a pseudo-terminal of 120x40 with a fresh
SOTOPIA_PI_HOME: no configuration, the built-in library, the embedded model on both sides and
as the live judge. It starts an episode, takes over side 2, and then, while side 1's model
generates (and the live judge scores), types one marker character at a time into side 2's
text box and times how long the character takes to come back out of the terminal. When it is
side 2's turn it sends a short line so the episode goes on.

    .venv/bin/python bench/tui_latency.py [--seconds 90] [--out results.json]

Prints p50/p95/max in milliseconds; the target is p95 <= 50 ms while the model generates.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sotopia_pi.store import Store  # noqa: E402

MARKERS = "¤§¶µ¢¥©®±¬"
CTRL_R, CTRL_U, CTRL_Q, ENTER = "\x12", "\x15", "\x11", "\r"


class Terminal:
    """The app in a pseudo-terminal; every byte it writes is kept with the time it arrived."""

    def __init__(self, home: Path, columns: int = 120, rows: int = 40):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = dict(os.environ, SOTOPIA_PI_HOME=str(home), TERM="xterm-256color", COLUMNS=str(columns), LINES=str(rows))
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from sotopia_pi.cli import main; main([])"],
            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO, start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.output = bytearray()
        self.arrivals: list[tuple[int, float]] = []  # (length of output after a read, time)
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            now = time.perf_counter()
            with self.changed:
                self.output += chunk
                self.arrivals.append((len(self.output), now))
                self.changed.notify_all()

    def send(self, text: str) -> tuple[int, float]:
        with self.changed:
            mark = len(self.output)
        sent = time.perf_counter()
        os.write(self.master, text.encode())
        return mark, sent

    def wait_for(self, needle: str, since: int = 0, timeout: float = 30.0) -> float | None:
        """When the output after `since` first contained `needle`; None on timeout."""
        pattern = needle.encode()
        deadline = time.perf_counter() + timeout
        with self.changed:
            while True:
                found = self.output.find(pattern, since)
                if found >= 0:
                    end = found + len(pattern)
                    return next(at for length, at in self.arrivals if length >= end)
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    return None
                self.changed.wait(remaining)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                os.write(self.master, CTRL_Q.encode())
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
        os.close(self.master)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict:
    if not values:
        return {"samples": 0}
    return {
        "samples": len(values),
        "p50_ms": round(percentile(values, 0.50), 1),
        "p95_ms": round(percentile(values, 0.95), 1),
        "max_ms": round(max(values), 1),
        "mean_ms": round(statistics.fmean(values), 1),
    }


def start_episode(terminal: Terminal) -> None:
    """From the library: start the highlighted scenario and take over side 2."""
    for keys, expected in ((CTRL_R, "Pause/resume"), ("2", "You play")):
        mark, _ = terminal.send(keys)
        if terminal.wait_for(expected, mark, timeout=60) is None:
            raise SystemExit(f"no {expected!r} on screen after {keys!r}")


def run(seconds: float, verbose: bool = False) -> dict:
    home = Path(tempfile.mkdtemp(prefix="sotopia-pi-bench-"))
    terminal = Terminal(home)
    generating: list[float] = []
    waiting: list[float] = []
    lost = closed = 0
    episodes = 0
    try:
        if terminal.wait_for("Start episode", timeout=60) is None:
            raise SystemExit("the app did not open")
        store = Store(home / "sotopia-pi.sqlite3")
        deadline = time.perf_counter() + seconds
        index = 0
        episode_id = None
        while time.perf_counter() < deadline:
            if episode_id is None:
                start_episode(terminal)
                episodes += 1
                episode_id = store.episode_rows(limit=1)[0]["id"]
            episode = store.episode(episode_id)
            turn_count = len(store.turns(episode_id))
            if episode.status.value == "finished":
                mark, _ = terminal.send("\x1b")  # Esc: back to the library, then a new episode
                terminal.wait_for("Start episode", mark, timeout=30)
                episode_id = None
                continue
            side_two_next = turn_count % 2 == 1
            if side_two_next and episode.status.value == "running":
                terminal.send(CTRL_U + "ok" + ENTER)  # our move: keep the episode going
                time.sleep(0.3)
                continue
            terminal.send(CTRL_U)
            time.sleep(0.05)
            marker = MARKERS[index % len(MARKERS)]
            index += 1
            mark, sent = terminal.send(marker)
            shown = terminal.wait_for(marker, mark, timeout=5)
            if verbose:
                took = "lost" if shown is None else f"{(shown - sent) * 1000:.1f} ms"
                print(f"key {index}: episode {episodes} turn {turn_count} {episode.status.value}, {took}", file=sys.stderr)
            if shown is None:
                if store.episode(episode_id).status.value == "running":
                    lost += 1
                else:
                    closed += 1  # the episode ended as the key was typed: its text box closed
                continue
            (generating if not side_two_next else waiting).append((shown - sent) * 1000)
            time.sleep(0.1)
        store.close()
    finally:
        terminal.close()
    return {
        "episodes": episodes,
        "while_model_generates": summary(generating),
        "otherwise": summary(waiting),
        "lost_keys": lost,
        "keys_typed_as_an_episode_ended": closed,
        "target_p95_ms": 50,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="how long to type while the episode runs")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="print every key's latency on stderr")
    args = parser.parse_args()
    result = run(args.seconds, args.verbose)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
