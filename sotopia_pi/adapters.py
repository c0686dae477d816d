"""The adapter registry: trained LoRA adapters as named, versioned records with their files.

Each version of an adapter owns one folder under the data directory:

    <home>/adapters/<name>/v<N>/peft/            the PEFT adapter (adapter_config.json,
                                                 adapter_model.safetensors; never pickle)
    <home>/adapters/<name>/v<N>/adapter.gguf     the same LoRA for llama.cpp (training/convert.py)

The record (store table `adapters`) says what the adapter was trained from (base model and its
file digest, snapshot and its digest), how (hyperparameters) and how well (metrics). Model names
refer to a registered adapter as `+adapter=NAME` (the newest version) or `+adapter=NAME@vN`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from . import paths
from .episode import utc_now
from .errors import SotopiaError
from .store import NotFound, Store

PEFT_DIR_NAME = "peft"
GGUF_FILE_NAME = "adapter.gguf"
PROVENANCE_FILE = "provenance.json"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_REFERENCE = re.compile(r"(?P<name>[^@]+?)(?:@v(?P<version>\d+))?")

AdapterStatus = Literal["ready", "peft-only"]


class AdapterError(SotopiaError, ValueError):
    """A bad adapter name, reference or file; the message says which and why."""


class AdapterRecord(BaseModel):
    """One registered version of an adapter."""

    name: str
    version: int = Field(0, description="assigned by register_adapter (1, 2, ...)")
    base_model: str = Field(description="the model name it was trained on, e.g. `embedded`")
    base_digest: str = Field("", description="SHA-256 of the base model's weights file(s)")
    snapshot: str = ""
    snapshot_digest: str = ""
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="train/eval losses, held-out loss of base and adapter, tokens/s..."
    )
    created_at: str = Field(default_factory=utc_now)
    peft_dir: str
    gguf_path: str | None = None
    status: AdapterStatus = "ready"

    @property
    def reference(self) -> str:
        """The name that picks exactly this version: `NAME@vN`."""
        return f"{self.name}@v{self.version}"


# -- names and files ----------------------------------------------------------------------------


def check_adapter_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise AdapterError(
            f"adapter name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def parse_reference(reference: str) -> tuple[str, int | None]:
    """`NAME` -> (NAME, None: the newest version); `NAME@vN` -> (NAME, N)."""
    match = _REFERENCE.fullmatch(reference.strip())
    if match is None:
        raise AdapterError(f"{reference!r} is not an adapter name; write NAME or NAME@vN")
    name = check_adapter_name(match["name"])
    return name, int(match["version"]) if match["version"] else None


def adapter_dir(name: str, version: int) -> Path:
    """The folder that holds one version's files."""
    return paths.adapters_dir() / check_adapter_name(name) / f"v{version}"


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, in hex."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def base_gguf_path(base_model: str) -> Path | None:
    """The GGUF file a base model name runs from in llama.cpp, or None (a plain `hf:DIR`)."""
    from .backends.base import parse_model_name

    spec = parse_model_name(base_model)
    if spec.kind == "hf":
        return (Path(spec.target).expanduser() / spec.gguf_file) if spec.gguf_file else None
    if spec.kind in {"embedded", "embedded-base", "gguf", "catalog"}:
        from .backends.llama_cpp_backend import resolve_model_path

        return resolve_model_path(spec)
    return None


def base_model_digest(base_model: str) -> str:
    """SHA-256 of the base model's weights: its GGUF, or the safetensors of an `hf:DIR` (in name
    order), so a record can tell whether the base an adapter is used with is the one it learned."""
    gguf = base_gguf_path(base_model)
    if gguf is not None:
        return file_digest(gguf)
    from .backends.base import parse_model_name

    directory = Path(parse_model_name(base_model).target).expanduser()
    combined = hashlib.sha256()
    for weights in sorted(directory.glob("*.safetensors")):
        combined.update(f"{weights.name}:{file_digest(weights)}\n".encode())
    return combined.hexdigest()


def check_peft_dir(peft_dir: Path) -> dict:
    """Refuse anything but a readable PEFT LoRA directory (JSON config + safetensors)."""
    from safetensors import SafetensorError, safe_open

    for file_name in PEFT_FILES:
        if not (peft_dir / file_name).is_file():
            raise AdapterError(f"{peft_dir} is not a PEFT adapter: {file_name} is missing")
    try:
        config = json.loads((peft_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AdapterError(f"{peft_dir}/adapter_config.json is not valid JSON: {error}") from None
    if not isinstance(config, dict) or "r" not in config:
        raise AdapterError(f"{peft_dir}/adapter_config.json is not a LoRA config (no rank `r`)")
    try:
        with safe_open(str(peft_dir / "adapter_model.safetensors"), framework="numpy") as weights:
            if not list(weights.keys()):
                raise AdapterError(f"{peft_dir}/adapter_model.safetensors holds no tensors")
    except (SafetensorError, OSError, ValueError) as error:
        raise AdapterError(f"{peft_dir}/adapter_model.safetensors is not a safetensors file: {error}") from None
    return config


def check_gguf_adapter(path: Path) -> None:
    """Refuse anything but a readable GGUF LoRA file."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        kinds = [
            reader.fields[key].contents() if key in reader.fields else None for key in ("general.type", "adapter.type")
        ]
    except Exception as error:  # gguf raises ValueError, struct.error, IndexError... on junk
        raise AdapterError(f"{path} is not a GGUF file ({error.__class__.__name__}: {error})") from None
    if kinds != ["adapter", "lora"]:
        raise AdapterError(f"{path} is not a GGUF LoRA adapter (general.type, adapter.type = {kinds})")


# -- the registry -------------------------------------------------------------------------------


def register_adapter(store: Store, record: AdapterRecord) -> AdapterRecord:
    """Register `record` as the next version of its name and return it as stored.

    The files are copied into `adapter_dir(name, version)` (unless `record.peft_dir` already is
    that version's `peft` folder). The GGUF is `record.gguf_path` when given, else converted from
    the PEFT adapter when the base model runs from a GGUF; without one the status is `peft-only`.
    A failure leaves neither a record nor files behind.
    """
    check_adapter_name(record.name)
    source_peft = Path(record.peft_dir).expanduser()
    check_peft_dir(source_peft)
    if record.gguf_path:
        check_gguf_adapter(Path(record.gguf_path))
    version = store.next_adapter_version(record.name)
    target = adapter_dir(record.name, version)
    in_place = source_peft.resolve() == (target / PEFT_DIR_NAME).resolve()
    if target.exists() and not in_place:
        raise AdapterError(
            f"{target} exists without a registry record (an interrupted registration?); remove it and try again"
        )
    staged = _stage_files(record, source_peft, target)
    stored = record.model_copy(update={"version": version, **staged})
    try:
        store.add_adapter(stored.model_dump())
    except BaseException:
        if not in_place:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return stored


def _stage_files(record: AdapterRecord, source_peft: Path, target: Path) -> dict[str, Any]:
    """Put the PEFT folder and the GGUF in `target`; returns the record fields that change."""
    in_place = source_peft.resolve() == (target / PEFT_DIR_NAME).resolve()
    target.mkdir(parents=True, exist_ok=in_place)  # a concurrent registration of this version fails here
    peft_target = target / PEFT_DIR_NAME
    try:
        if not in_place:
            _copy_peft(source_peft, peft_target)
        gguf_target = target / GGUF_FILE_NAME
        if record.gguf_path:
            if Path(record.gguf_path).resolve() != gguf_target.resolve():
                _copy_atomically(Path(record.gguf_path), gguf_target)
        else:
            base_gguf = base_gguf_path(record.base_model)
            if base_gguf is None:
                return {"peft_dir": str(peft_target), "gguf_path": None, "status": "peft-only"}
            from .training.convert import convert_peft_to_gguf

            convert_peft_to_gguf(peft_target, base_gguf, gguf_target)
    except BaseException:
        if not in_place:
            shutil.rmtree(target, ignore_errors=True)
        raise
    return {"peft_dir": str(peft_target), "gguf_path": str(gguf_target), "status": "ready"}


def _copy_peft(source: Path, target: Path) -> None:
    """Copy the adapter files (config, safetensors, tokenizer and README if any; never pickles
    or checkpoints) into `target`, which appears only once complete."""
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        for item in source.iterdir():
            if item.is_file() and item.suffix not in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}:
                shutil.copy2(item, staging / item.name)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _copy_atomically(source: Path, target: Path) -> None:
    partial = target.with_name(f".{target.name}.partial")
    shutil.copy2(source, partial)
    os.replace(partial, target)


def list_adapters(store: Store, name: str | None = None) -> list[AdapterRecord]:
    """Every registered version (of one name, or of all), by name then version."""
    return [AdapterRecord.model_validate(row) for row in store.adapter_rows(name)]


def get_adapter(store: Store, reference: str) -> AdapterRecord:
    """`NAME` (the newest version) or `NAME@vN`. Raises store.NotFound."""
    name, version = parse_reference(reference)
    return AdapterRecord.model_validate(store.adapter_row(name, version))


def delete_adapter(store: Store, reference: str) -> list[AdapterRecord]:
    """Delete `NAME@vN`, or every version of `NAME`: records and their files. Only folders
    inside the adapters directory are removed. Returns what was deleted."""
    name, version = parse_reference(reference)
    doomed = list_adapters(store, name) if version is None else [get_adapter(store, reference)]
    if not doomed:
        raise NotFound(f"no adapter {name!r}")
    store.delete_adapter_rows(name, version)
    for record in doomed:
        folder = adapter_dir(record.name, record.version)
        if folder.is_dir():
            shutil.rmtree(folder)
    name_folder = paths.adapters_dir() / name
    if name_folder.is_dir() and not any(name_folder.iterdir()):
        name_folder.rmdir()
    return doomed


def export_adapter(store: Store, reference: str, out_dir: str | Path) -> Path:
    """Copy an adapter's PEFT folder and GGUF into `out_dir` (new or empty) with a
    provenance.json: the record plus the SHA-256 of every file exported."""
    record = get_adapter(store, reference)
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise AdapterError(f"{out_dir} already exists and is not an empty folder")
    peft_dir = Path(record.peft_dir)
    check_peft_dir(peft_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(peft_dir, out_dir / PEFT_DIR_NAME)
    exported = [out_dir / PEFT_DIR_NAME / name for name in sorted(os.listdir(out_dir / PEFT_DIR_NAME))]
    if record.gguf_path:
        shutil.copy2(record.gguf_path, out_dir / GGUF_FILE_NAME)
        exported.append(out_dir / GGUF_FILE_NAME)
    provenance = {
        "adapter": record.model_dump(mode="json"),
        "files": {str(path.relative_to(out_dir)): file_digest(path) for path in exported},
        "exported_at": utc_now(),
    }
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return out_dir


# -- model names --------------------------------------------------------------------------------


def resolve_adapter_reference(reference: str, kind: str, store: Store | None = None) -> Path:
    """The file or folder a registered adapter gives a backend of `kind`: the GGUF for llama.cpp
    models, the PEFT folder for transformers."""
    opened = store or Store()
    try:
        try:
            record = get_adapter(opened, reference)
        except (NotFound, AdapterError):
            raise AdapterError(
                f"adapter {reference!r} is neither an existing file or folder nor a registered adapter "
                "(see `sotopia-pi adapters list`)"
            ) from None
    finally:
        if store is None:
            opened.close()
    if kind == "hf":
        return Path(record.peft_dir)
    if record.gguf_path is None:
        raise AdapterError(
            f"adapter {record.reference} has no GGUF file (its base {record.base_model} is not a GGUF), "
            "so llama.cpp models cannot use it; use it with an hf: model"
        )
    return Path(record.gguf_path)
