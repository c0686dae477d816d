"""Replays canned outputs, in order. A deterministic test double for the engine; never a default.

The file is a JSON list of strings (each one model answer), streamed eight characters a token;
a cancel is seen between two tokens, as with a model, and the cancelled answer comes again.
When the list runs out the backend raises BackendError, like a model that stopped answering.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

from ..episode import ChatMessage
from .base import BackendError, Cancelled, Completion, ModelSpec, TokenCallback


class ReplayBackend:
    def __init__(self, outputs: Sequence[str], name: str = "replay"):
        self.name = name
        self.spec = ModelSpec(kind="replay", target=name.removeprefix("replay").removeprefix(":"))
        self._outputs = list(outputs)
        self._position = 0
        self.calls: list[list[ChatMessage]] = []

    @classmethod
    def from_file(cls, path: str) -> ReplayBackend:
        file = Path(path)
        try:
            outputs = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError too
            raise BackendError(f"cannot read replay file {file}: {error}") from error
        if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            raise BackendError(f"{file}: a replay file is a JSON list of strings")
        return cls(outputs, name=f"replay:{path}")

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
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        if self._position >= len(self._outputs):
            raise BackendError(f"{self.name}: no more canned outputs ({len(self._outputs)} used)")
        self.calls.append(list(messages))
        text = self._outputs[self._position]
        if on_token is not None:
            for start in range(0, len(text), 8):
                if cancel is not None and cancel.is_set():  # between two tokens, as a model does
                    raise Cancelled(f"cancelled after {start // 8} tokens")
                on_token(text[start : start + 8])
        self._position += 1
        return Completion(text=text, completion_tokens=len(text.split()), finish_reason="stop")

    def close(self) -> None:
        pass
