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

from ..episode import adapter_identity
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
    "adapter_identity",
    "as_spec",
    "create_backend",
    "format_model_name",
    "parse_model_name",
    "preset_for",
    "preset_spec",
    "resolve_adapter",
    "shipped_adapter",
]

_ADAPTER_FILE_KINDS = {"embedded", "embedded-base", "gguf", "catalog", "hf"}


# Adapters shipped with the project (models/adapters/NAME.gguf for llama.cpp, NAME/ as PEFT).
SHIPPED_AGENT_ADAPTER = "embedded-bc"
SHIPPED_JUDGE_ADAPTER = "embedded-judge"


def shipped_adapter(name: str, kind: str) -> Path | None:
    """The file (llama.cpp) or folder (transformers) of an adapter shipped in models/adapters."""
    from .. import paths

    root = paths.REPO_ROOT / "models" / "adapters"
    path = root / name if kind == "hf" else root / f"{name}.gguf"
    return path if path.exists() and "/" not in name else None


def as_spec(model: str | ModelSpec) -> ModelSpec:
    """A ModelSpec as it is; a model name (from a command line, the settings or the store)
    parsed. The engine carries specs; names are parsed where they come in."""
    return model if isinstance(model, ModelSpec) else parse_model_name(model)


def preset_spec(spec: ModelSpec, role: str = "agent") -> ModelSpec:
    """The model an episode stores for what the user asked: `embedded` (no adapter) means the
    embedded model with the project's shipped adapter for that role (`agent` or `judge`),
    written out explicitly as `embedded-base+adapter=NAME`; every other spec is kept as it is.
    Without the shipped file, `embedded` is the bare model."""
    if spec.kind != "embedded":
        return spec
    adapter = spec.adapter or (SHIPPED_JUDGE_ADAPTER if role == "judge" else SHIPPED_AGENT_ADAPTER)
    if not spec.adapter and shipped_adapter(adapter, "embedded") is None:
        return ModelSpec(kind="embedded-base")
    return ModelSpec(kind="embedded-base", adapter=adapter)


def preset_for(name: str, role: str = "agent") -> str:
    """`preset_spec` for a model name; other names are returned exactly as given."""
    spec = as_spec(name)
    return name if spec.kind != "embedded" else preset_spec(spec, role).name


def resolve_adapter(spec: ModelSpec) -> ModelSpec:
    """Replace an adapter's name in `spec` by its file (the GGUF for llama.cpp kinds, the PEFT
    folder for hf:): a path that exists wins, then an adapter shipped with the project, then a
    registered one (the store is opened only then)."""
    if not spec.adapter or spec.kind not in _ADAPTER_FILE_KINDS or Path(spec.adapter).expanduser().exists():
        return spec
    if "/" in spec.adapter or spec.adapter.endswith(".gguf"):  # a path (names never look so): the backend says what is wrong
        return spec
    shipped = shipped_adapter(spec.adapter, spec.kind)
    if shipped is not None:
        return replace(spec, adapter=str(shipped))
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
    if spec.kind in {"embedded", "embedded-base", "gguf", "catalog"}:
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
