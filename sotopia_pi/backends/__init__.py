"""Model backends. `create_backend(name)` turns a model name into a ready backend.

Backend modules are imported lazily: torch/transformers take seconds to import and most runs
never need them.
"""

from __future__ import annotations

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
]


def create_backend(name: str | ModelSpec, **options) -> ChatBackend:
    """Build the backend a model name asks for. Each call returns a new, independent backend
    (each agent gets its own, so that each keeps its own prompt cache)."""
    spec = name if isinstance(name, ModelSpec) else parse_model_name(name)
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
