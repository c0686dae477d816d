"""Helpers for the TUI tests: a seeded store, replay files, a backend that holds its answer
until the test lets it go, and a poll-until for Pilot."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sotopia_pi.backends import Cancelled, Completion, create_backend
from sotopia_pi.backends.replay import ReplayBackend
from sotopia_pi.config import Settings
from sotopia_pi.episode import ChatMessage


def replay_file(directory: Path, name: str, outputs: Sequence[str]) -> str:
    path = directory / f"{name}.json"
    path.write_text(json.dumps(list(outputs)), encoding="utf-8")
    return f"replay:{path}"


def replay_settings(directory: Path, side1: Sequence[str], side2: Sequence[str], judge: Sequence[str], **fields) -> Settings:
    return Settings(
        agent1_model=replay_file(directory, "side1", side1),
        agent2_model=replay_file(directory, "side2", side2),
        judge_model=replay_file(directory, "judge", judge),
        **fields,
    )


class HeldBackend:
    """Streams the start of its answer, then waits for `release` (or the runner's cancel)
    before finishing: a model caught in the middle of generating."""

    def __init__(self, outputs: Sequence[str], name: str = "held"):
        self.name = name
        self._inner = ReplayBackend(outputs, name)
        self.release = threading.Event()
        self.generating = threading.Event()
        self.cancelled = 0

    def complete(self, messages: list[ChatMessage], *, on_token=None, cancel=None, **options) -> Completion:
        self.generating.set()
        if on_token is not None:
            on_token('{"action_type": "speak", "argument": "Let me th')
        try:
            while not self.release.wait(0.02):
                if cancel is not None and cancel.is_set():
                    self.cancelled += 1
                    raise Cancelled("cancelled while generating")
        finally:
            self.generating.clear()
        return self._inner.complete(messages, on_token=on_token, cancel=cancel, **options)

    def close(self) -> None:
        pass


def factory_with(held: dict[str, HeldBackend]) -> Callable:
    """A backend factory that hands out the given held backends by model name and builds
    every other name the normal way."""

    def build(name, **options):
        if name in held:
            return held[name]
        return create_backend(name, **options)

    return build


async def wait_until(pilot, predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await pilot.pause(0.02)
