"""A person at the keyboard, behind the same protocol as every model.

The TUI (or the CLI, reading stdin) hands the person's action in with `submit`; `complete`
blocks until it arrives or the cancel event is set. The runner can switch a side between a model
and a HumanBackend between any two turns: that is how a character is taken over.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from ..episode import AgentAction, ChatMessage
from .base import Cancelled, Completion, ModelSpec, TokenCallback

POLL_SECONDS = 0.1


class HumanBackend:
    name = "human"
    spec = ModelSpec(kind="human")

    def __init__(self, read_action: Callable[[list[ChatMessage]], AgentAction] | None = None):
        """`read_action`, when given, is called to obtain the action synchronously (stdin);
        otherwise actions come from `submit`."""
        self._read_action = read_action
        self._actions: queue.Queue[AgentAction] = queue.Queue()
        self.waiting = threading.Event()

    def submit(self, action: AgentAction) -> None:
        self._actions.put(action)

    def complete(
        self,
        messages: list[ChatMessage],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        temperature: float = 0.7,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        started = time.perf_counter()
        self.waiting.set()
        try:
            action = self._read_action(messages) if self._read_action else self._wait(cancel)
        finally:
            self.waiting.clear()
        return Completion(
            text=action.to_json(),
            latency_ms=(time.perf_counter() - started) * 1000,
            finish_reason="human",
        )

    def _wait(self, cancel: threading.Event | None) -> AgentAction:
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled("stopped while waiting for the person's action")
            try:
                return self._actions.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue

    def close(self) -> None:
        pass
