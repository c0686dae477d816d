"""Fold a GGUF LoRA adapter into a copy of its base GGUF, once, and keep the copy in a cache.

llama.cpp applies a LoRA at run time as two extra small matrix products on every adapted
projection, for every token. On the embedded 135M model with two threads those extra graph
nodes cost about as much as the model's own (bench/agent_quality.py measured 2.1x the base's
time per generated token with the shipped 7-projection adapter). A merged copy runs at the
base's speed: W' = W + scale * (alpha / rank) * B @ A, requantized to W's own type.

The copy is keyed by both files' paths, sizes and modification times and by the scale, so a
retrained adapter or a changed base gets a new copy; it is written to a temporary name and
renamed into place, so a killed merge leaves no half file behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from .. import paths
from .base import BackendError

MERGE_FORMAT = 1  # bump when the merged file would come out differently
LORA_A, LORA_B = ".lora_a", ".lora_b"
CACHE_ENV = "SOTOPIA_PI_MERGE_CACHE"
MERGE_ENV = "SOTOPIA_PI_MERGE_ADAPTERS"
_merging = threading.Lock()  # two agents opening at once merge once


def merging_wanted() -> bool:
    """Merge unless the user set SOTOPIA_PI_MERGE_ADAPTERS=0 (apply adapters at run time)."""
    return os.environ.get(MERGE_ENV, "").strip().lower() not in {"0", "false", "no", "off"}


def merge_cache_dir() -> Path:
    override = os.environ.get(CACHE_ENV)
    folder = Path(override).expanduser() if override else paths.home() / "cache" / "merged-models"
    return paths.ensure_dir(folder, "merged model cache")


def merged_model_path(base: Path, adapter: Path, scale: float = 1.0, weight_type=None) -> Path:
    """The merged GGUF for `base` with `adapter` at `scale`, made now if the cache lacks it;
    older merges of the same two files are removed. BackendError when the adapter does not fit
    the base (names, shapes) or cannot be read."""
    folder = merge_cache_dir()
    files = _digest(f"{base.resolve()}\n{adapter.resolve()}")
    target = folder / f"{base.stem}+{adapter.stem}-{files}-{_state_key(base, adapter, scale, weight_type)}.gguf"
    with _merging:
        if not target.is_file():
            _merge_into_cache(base, adapter, target, scale, weight_type)
    return target


def _merge_into_cache(base: Path, adapter: Path, target: Path, scale: float, weight_type) -> None:
    folder = target.parent
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".merging-", suffix=".gguf")
    os.close(handle)
    try:
        write_merged_gguf(base, adapter, Path(temporary), scale, weight_type)
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)
    same_files = target.name.rsplit("-", 1)[0]
    for older in folder.glob(f"{same_files}-*.gguf"):
        if older != target:
            older.unlink(missing_ok=True)  # a copy still open stays readable until it is closed


def _state_key(base: Path, adapter: Path, scale: float, weight_type) -> str:
    parts = [f"format={MERGE_FORMAT}", f"scale={scale!r}", f"type={getattr(weight_type, 'name', weight_type)}"]
    for path in (base, adapter):
        stat = path.stat()
        parts.append(f"{stat.st_size}:{stat.st_mtime_ns}")
    return _digest("\n".join(parts))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def write_merged_gguf(base: Path, adapter: Path, out: Path, scale: float = 1.0, weight_type=None) -> None:
    """Write `base` with `adapter` folded into its weights to `out`: the adapted weights as
    `weight_type` (a gguf.GGMLQuantizationType; None: each weight's own type), the rest as is."""
    import gguf

    try:
        base_reader = gguf.GGUFReader(str(base))
        lora_reader = gguf.GGUFReader(str(adapter))
    except Exception as error:  # gguf raises ValueError, struct.error, IndexError... on junk
        raise BackendError(f"cannot read {base.name} or {adapter.name} as GGUF: {error}") from None
    lora = {tensor.name: tensor for tensor in lora_reader.tensors}
    factor = scale * _lora_alpha_over_rank(lora_reader, lora, adapter)
    arch = _field(base_reader, "general.architecture") or "llama"
    writer = gguf.GGUFWriter(str(out), arch=arch)
    _copy_metadata(base_reader, writer)
    writer.add_string("sotopia_pi.merged_adapter", f"{adapter.name} x{scale:g}")
    merged = set()
    for tensor in base_reader.tensors:
        if tensor.name + LORA_A in lora:
            quant = weight_type if weight_type is not None else tensor.tensor_type
            weights = _merged_weights(tensor, lora[tensor.name + LORA_A], lora[tensor.name + LORA_B], factor)
            writer.add_tensor(tensor.name, gguf.quants.quantize(weights, quant), raw_dtype=quant)
            merged.add(tensor.name)
        else:
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=_raw_type(tensor))
    missing = {name.removesuffix(LORA_A) for name in lora if name.endswith(LORA_A)} - merged
    if missing:
        raise BackendError(f"{adapter.name} adapts tensors {base.name} does not have: {', '.join(sorted(missing)[:3])}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _merged_weights(tensor, lora_a, lora_b, factor: float) -> np.ndarray:
    import gguf

    weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(_rows_cols(tensor))
    a = gguf.quants.dequantize(lora_a.data, lora_a.tensor_type).reshape(_rows_cols(lora_a))
    b = gguf.quants.dequantize(lora_b.data, lora_b.tensor_type).reshape(_rows_cols(lora_b))
    if b.shape[0] != weights.shape[0] or a.shape[1] != weights.shape[1] or a.shape[0] != b.shape[1]:
        raise BackendError(f"LoRA shapes {a.shape} and {b.shape} do not fit {tensor.name} {weights.shape}")
    return (weights + factor * (b.astype(np.float32) @ a.astype(np.float32))).astype(np.float32)


def _rows_cols(tensor) -> tuple[int, int]:
    """A 2-D tensor's (rows, columns) as numpy sees a dequantized copy: GGUF lists ne[0] first."""
    columns, rows = (int(n) for n in tensor.shape[:2])
    return rows, columns


def _raw_type(tensor):
    """The type to declare when copying a tensor's bytes: only quantized data (uint8) needs it."""
    return tensor.tensor_type if tensor.data.dtype == np.uint8 else None


def _lora_alpha_over_rank(reader, lora: dict, adapter: Path) -> float:
    """llama.cpp's scale for an adapter: alpha / rank, or 1 when the file gives no alpha."""
    if _field(reader, "general.type") != "adapter" or _field(reader, "adapter.type") != "lora":
        raise BackendError(f"{adapter} is not a GGUF LoRA adapter")
    pairs = [name for name in lora if name.endswith(LORA_A)]
    if not pairs or any(name.removesuffix(LORA_A) + LORA_B not in lora for name in pairs):
        raise BackendError(f"{adapter} has no complete lora_a/lora_b tensor pairs")
    alpha = _field(reader, "adapter.lora.alpha")
    rank = int(lora[pairs[0]].shape[1])  # lora_a's ne: [columns of W, rank]
    return float(alpha) / rank if alpha else 1.0


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def _copy_metadata(reader, writer) -> None:
    import gguf

    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # the header's own fields, and the one the writer adds itself
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), value_type, sub_type=sub_type)
    alignment = _field(reader, "general.alignment")
    if alignment:
        writer.data_alignment = int(alignment)
