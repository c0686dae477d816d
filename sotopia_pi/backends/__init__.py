"""Model backends. `create_backend(name)` turns a model name into a ready backend.

Backend modules are imported lazily: torch/transformers take seconds to import and most runs
never need them.

`+adapter=X` names a file or folder when X exists, else a registered adapter (`NAME` for its
newest version, `NAME@vN` for one version; see sotopia_pi/adapters.py): its GGUF for llama.cpp
models, its PEFT folder for hf: models.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .base import (
    AdapterSwapping,
    BackendError,
    Cancelled,
    ChatBackend,
    Completion,
    ModelNameError,
    ModelSpec,
    format_model_name,
    parse_model_name,
)

__all__ = [
    "AdapterSwapping",
    "BackendError",
    "Cancelled",
    "ChatBackend",
    "Completion",
    "ModelNameError",
    "ModelSpec",
    "create_backend",
    "format_model_name",
    "parse_model_name",
    "resolve_adapter",
]

_ADAPTER_FILE_KINDS = {"embedded", "gguf", "catalog", "hf"}


def resolve_adapter(spec: ModelSpec) -> ModelSpec:
    """Replace a registered adapter's name in `spec` by its file (the GGUF for llama.cpp kinds,
    the PEFT folder for hf:). A path that exists wins; the store is opened only otherwise."""
    if not spec.adapter or spec.kind not in _ADAPTER_FILE_KINDS or Path(spec.adapter).expanduser().exists():
        return spec
    from ..adapters import AdapterError, resolve_adapter_reference

    try:
        return replace(spec, adapter=str(resolve_adapter_reference(spec.adapter, spec.kind)))
    except AdapterError as error:
        raise BackendError(f"{spec.name}: {error}") from None


def create_backend(name: str | ModelSpec, **options) -> ChatBackend:
    """Build the backend a model name asks for. Each call returns a new, independent backend
    (each agent gets its own, so that each keeps its own prompt cache)."""
    spec = name if isinstance(name, ModelSpec) else parse_model_name(name)
    spec = resolve_adapter(spec)
    if spec.kind in {"embedded", "gguf", "catalog"}:
        from .llama_cpp_backend import LlamaCppBackend

        return LlamaCppBackend.from_spec(spec, **options)
    if spec.kind == "openai":
        from .openai_backend import OpenAIBackend

        return OpenAIBackend.from_spec(spec, **options)
    if spec.kind == "hf":
        from .transformers_backend import TransformersBackend

        return TransformersBackend.from_spec(spec, **options)
    if spec.kind == "human":
        from .human import HumanBackend

        return HumanBackend(**options)
    if spec.kind == "replay":
        from .replay import ReplayBackend

        return ReplayBackend.from_file(spec.target)
    raise ModelNameError(f"no backend for {spec.name}")
