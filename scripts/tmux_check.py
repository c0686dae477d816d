"""Drive the real app in tmux as a person would, and report every step where the terminal does
not show what the app drew, or where typed keys did not land where they were aimed.

Each run starts `sotopia-pi` (no arguments, a fresh SOTOPIA_PI_HOME, the default models) in a
detached tmux session of the given size (TERM=tmux-256color, as tmux 3.3a sets it) and sends
keys with `tmux send-keys`, one key per call at a human pace. After each step it compares
`tmux capture-pane -p` (what the terminal holds) with the app's own picture of its screen (the
text of what its compositor would paint now, written on SIGUSR1 by a hook this script adds
when it starts the app) and reports the lines that differ. A difference that lasts while the
screen is otherwise still is a stale or garbled region: resizing would repaint it.

    .venv/bin/python scripts/tmux_check.py [--size 120x40 --size 80x24] [--delays 120,60,30,0]
                                           [--rounds 1] [--json OUT]

Exit status 0 when every step matched and every typed field held what was typed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOCKET = f"sotopia-check-{os.getpid()}"


# -- inside tmux: the app with a screen-dump hook -------------------------------------------


def serve_app(dump_path: str) -> None:
    """Run the app as `sotopia-pi` does, and on SIGUSR1 write the text of the screen the app
    believes it shows (every layer, toasts and dialogs included) to `dump_path`."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the app answers it
    sys.path.insert(0, str(REPO))
    import asyncio

    from textual._context import visible_screen_stack

    from tui import app as tui_app

    original_on_mount = tui_app.SotopiaApp.on_mount

    def on_mount(self) -> None:
        original_on_mount(self)

        def dump() -> None:
            screen = self.screen
            visible_screen_stack.set(self._background_screens)
            lines = [strip.text.rstrip() for strip in screen._compositor.render_strips()]
            temporary = dump_path + ".tmp"
            Path(temporary).write_text("\n".join(lines), encoding="utf-8")
            os.replace(temporary, dump_path)

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)

    tui_app.SotopiaApp.on_mount = on_mount
    count_dropped_paints(tui_app.SotopiaApp, Path(dump_path).with_suffix(".dropped"))
    from sotopia_pi.cli import main

    main([])


def count_dropped_paints(app_class, log_path: Path) -> None:
    """Log every screen update Textual painted and then did not write because an update batch
    was open (the regions it painted are off the compositor's to-do list all the same)."""
    original_display = app_class._display

    def display(self, screen, renderable) -> None:
        if renderable is not None and self._batch_count:
            with log_path.open("a", encoding="utf-8") as log:
                log.write(f"{time.time():.3f} {type(screen).__name__}\n")
        original_display(self, screen, renderable)

    app_class._display = display


# -- outside: tmux ---------------------------------------------------------------------------


def tmux(*arguments: str) -> str:
    return subprocess.run(
        ["tmux", "-L", SOCKET, *arguments], check=True, capture_output=True, text=True
    ).stdout


class Session:
    """One app in one tmux window."""

    def __init__(self, columns: int, rows: int, home: Path, nice: int = 10):
        self.columns, self.rows = columns, rows
        self.dump = home / "screen-dump.txt"
        command = " ".join(
            [
                f"env SOTOPIA_PI_HOME={home}",
                f"nice -n {nice}",
                sys.executable,
                str(Path(__file__).resolve()),
                "--serve-app",
                str(self.dump),
            ]
        )
        tmux("new-session", "-d", "-s", "app", "-x", str(columns), "-y", str(rows), command)
        tmux("set-option", "-t", "app", "remain-on-exit", "on")  # keep a crash's traceback readable
        self.pid = int(tmux("display-message", "-p", "-t", "app", "#{pane_pid}").strip())

    def close(self) -> None:
        try:
            tmux("kill-server")
        except subprocess.CalledProcessError:
            pass

    def send(self, *keys: str, delay: float = 0.12) -> None:
        """Each item is a tmux key name (C-r, Tab, Escape, F2...) or literal text, sent one
        character per call."""
        for key in keys:
            named = key in NAMED_KEYS or re.fullmatch(r"[CM]-.|F\d{1,2}", key) is not None
            pieces = [key] if named else list(key)
            for piece in pieces:
                tmux("send-keys", "-t", "app", *([] if named else ["-l"]), piece)
                if delay:
                    time.sleep(delay)

    def dead(self) -> bool:
        return tmux("display-message", "-p", "-t", "app", "#{pane_dead}").strip() == "1"

    def capture(self) -> list[str]:
        return [line.rstrip() for line in tmux("capture-pane", "-p", "-t", "app").split("\n")][: self.rows]

    def app_screen(self, timeout: float = 10.0) -> list[str] | None:
        before = self.dump.stat().st_mtime_ns if self.dump.exists() else 0
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.dump.exists() and self.dump.stat().st_mtime_ns != before:
                return self.dump.read_text(encoding="utf-8").split("\n")[: self.rows]
            time.sleep(0.02)
        return None

    def wait_for(self, text: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.capture()):
                return True
            time.sleep(0.1)
        return False


STILL_SECONDS = 15.0  # a form that has not changed for this long is taken as final
NAMED_KEYS = {"Tab", "BTab", "Enter", "Escape", "Space", "Up", "Down", "Left", "Right", "PageUp", "PageDown", "BSpace"}


@dataclass
class StepResult:
    step: str
    size: str
    ok: bool
    problem: str = ""
    differing_lines: list[dict] = field(default_factory=list)
    dropped_paints: int = 0


def compare(session: Session, tries: int = 8) -> list[dict]:
    """The lines where the terminal differs from the app's own picture. A screen that is
    changing (a model streaming) differs for a moment; only a difference seen on every try,
    with the terminal still between the two captures around the dump, counts."""
    differing: list[dict] = []
    for _ in range(tries):
        before = session.capture()
        drawn = session.app_screen()
        time.sleep(0.15)  # let the app's own pending paint reach the terminal
        after = session.capture()
        if drawn is None:
            return [{"line": -1, "terminal": "", "app": "the app did not answer the screen-dump signal"}]
        if before != after:
            time.sleep(0.3)
            continue
        differing = [
            {"line": index + 1, "terminal": shown, "app": meant}
            for index, (shown, meant) in enumerate(zip(after, drawn + [""] * len(after)))
            if shown != meant
        ]
        if not differing:
            return []
        time.sleep(0.3)
    return differing


class Checker:
    def __init__(self, session: Session, size: str):
        self.session, self.size = session, size
        self.results: list[StepResult] = []
        self.dropped = 0

    def step(self, name: str, keys: tuple[str, ...] = (), expect: str | None = None, timeout: float = 60.0,
             delay: float = 0.12, settle: float = 0.5) -> bool:
        self.session.send(*keys, delay=delay)
        if self.session.dead():
            self.results.append(StepResult(name, self.size, False, "the app exited: " + " / ".join(self.session.capture()[-12:])))
            return False
        if expect is not None and not self.session.wait_for(expect, timeout):
            self.results.append(StepResult(name, self.size, False, f"{expect!r} never appeared"))
            return False
        time.sleep(settle)
        differing = compare(self.session)
        problem = "stale or garbled screen" if differing else ""
        self.results.append(StepResult(name, self.size, not differing, problem, differing, self.dropped_paints()))
        return True

    def dropped_paints(self) -> int:
        """How many paints Textual dropped inside an update batch since the last step."""
        log = self.session.dump.with_suffix(".dropped")
        count = len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0
        new, self.dropped = count - self.dropped, count
        return new

    def fields(self, name: str, wanted: dict[str, str], timeout: float = 60.0) -> None:
        """The form lines `label value` in the terminal, once they hold what was typed or
        have stopped changing for a while (a busy machine handles keys late, not never)."""
        deadline = time.monotonic() + timeout
        last, still_since = None, time.monotonic()
        while True:
            got = self.field_values(wanted)
            if got == wanted or time.monotonic() > deadline or time.monotonic() - still_since > STILL_SECONDS:
                break
            if got != last:
                last, still_since = got, time.monotonic()
            time.sleep(0.2)
        problems = [f"{label}: {got.get(label)!r}, typed {value!r}" for label, value in wanted.items() if got.get(label) != value]
        self.results.append(StepResult(name, self.size, not problems, "; ".join(problems)))

    def field_values(self, wanted: dict[str, str]) -> dict[str, str | None]:
        shown = self.session.capture()
        values: dict[str, str | None] = {}
        for label in wanted:
            line = next((line for line in shown if line.strip().startswith(label)), None)
            values[label] = None if line is None else line.strip()[len(label):].strip()
        return values


# -- the walks ------------------------------------------------------------------------------


def walk_episode(check: Checker) -> None:
    """Library -> live episode -> take over side 2 -> hand back -> pause -> back."""
    if not check.step("library at launch", expect="Start", timeout=90):
        return
    if not check.step("^r opens the live screen", ("C-r",), expect="dimension"):
        return
    check.step("a model turn streams", expect="#0", timeout=60, settle=3.0)
    check.step("2 takes over side 2", ("2",), expect="You play", timeout=60)
    check.step("^b hands side 2 back", ("C-b",), expect="Pause/resume", timeout=60, settle=1.0)
    check.step("p pauses", ("p",), expect="paus", timeout=120)
    check.step("Esc back to the library", ("Escape",), expect="Start", timeout=60)


def walk_editor(check: Checker) -> None:
    """Library -> edit the highlighted scenario (^o) -> export dialog (^l) -> back."""
    if not check.step("^o opens the scenario editor", ("C-o",), expect="Shared context"):
        return
    check.step("^l shows the export dialog", ("C-l",), expect="Export to a library file")
    check.step("Esc closes the dialog", ("Escape",), settle=1.0)
    check.session.send("Escape", "n", "y", delay=0.5)  # close the editor (dropping the copy)
    check.session.wait_for("Start", 30)


def walk_typing(check: Checker, delays_ms: list[int]) -> None:
    """New character form: `Ann`, Tab, `Bo`, Tab, `42` at each pace; every key in its field."""
    if not check.step("library at launch", expect="Start", timeout=90):
        return
    check.step("^t characters tab", ("C-t",), expect="Arjun", settle=1.0)
    for delay_ms in delays_ms:
        if not check.step(f"^n new character ({delay_ms} ms per key)", ("C-n",), expect="New character"):
            return
        check.session.send("Ann", "Tab", "Bo", "Tab", "42", delay=delay_ms / 1000)
        check.fields(f"Ann Tab Bo Tab 42 at {delay_ms} ms per key", {"First name": "Ann", "Last name": "Bo", "Age": "42"})
        check.step(f"form after typing at {delay_ms} ms", settle=0.5)
        check.session.send("Escape", delay=0.5)
        check.session.send("y", delay=0.5)  # drop the unsaved character
        check.session.wait_for("Characters", 30)
        time.sleep(0.5)


def run(sizes: list[tuple[int, int]], delays_ms: list[int], rounds: int, walks: list[str]) -> list[StepResult]:
    results: list[StepResult] = []
    for columns, rows in sizes:
        for _ in range(rounds):
            home = Path(tempfile.mkdtemp(prefix="sotopia-tmux-check-"))
            session = Session(columns, rows, home)
            check = Checker(session, f"{columns}x{rows}")
            try:
                if "episode" in walks:
                    walk_episode(check)
                if "editor" in walks:
                    walk_editor(check)
                if "typing" in walks:
                    walk_typing(check, delays_ms)
            finally:
                session.close()
                shutil.rmtree(home, ignore_errors=True)
            results.extend(check.results)
    return results


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-app":
        serve_app(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", action="append", help="COLUMNSxROWS (default 120x40 and 80x24)")
    parser.add_argument("--delays", default="120,60,30,0", help="ms between typed keys in the form walk")
    parser.add_argument("--rounds", type=int, default=1, help="how many times to run the walks per size")
    parser.add_argument("--walks", default="episode,editor,typing", help="which walks: episode, editor, typing")
    parser.add_argument("--json", type=Path, help="also write every step's result here")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is not installed (apt-get install tmux)")
    sizes = [tuple(int(n) for n in size.split("x")) for size in (args.size or ["120x40", "80x24"])]
    delays = [int(value) for value in args.delays.split(",") if value.strip()]
    results = run(sizes, delays, args.rounds, args.walks.split(","))
    for result in results:
        print(
            f"{'ok  ' if result.ok else 'FAIL'} {result.size} {result.step}"
            + (f": {result.problem}" if result.problem else "")
            + (f" ({result.dropped_paints} paint(s) dropped inside an update batch)" if result.dropped_paints else "")
        )
        for line in result.differing_lines[:6]:
            print(f"       line {line['line']}: terminal {line['terminal']!r}")
            print(f"       {' ' * len(str(line['line']))}       app      {line['app']!r}")
    failures = sum(not result.ok for result in results)
    print(f"{len(results) - failures} of {len(results)} steps as drawn and typed")
    if args.json:
        args.json.write_text(json.dumps([asdict(result) for result in results], indent=2) + "\n", encoding="utf-8")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
