"""PEFT LoRA -> GGUF LoRA, so that llama.cpp can run (and hot-swap) an adapter trained with PEFT.

Only gguf, safetensors and numpy: no torch, so the runtime can convert without the training extra.

What llama.cpp expects of a LoRA GGUF (llama-adapter.cpp):
- KV `general.type = "adapter"`, `general.architecture` equal to the base model's,
  `adapter.type = "lora"`, `adapter.lora.alpha` (llama.cpp scales by alpha / rank, the rank being
  read from each lora_b tensor).
- Per adapted weight `W` named `blk.N.attn_q.weight`: `blk.N.attn_q.weight.lora_a` with ggml shape
  [n_in, r] and `.lora_b` with [r, n_out]. In numpy order those are PEFT's `lora_A.weight` (r, in)
  and `lora_B.weight` (out, r) unchanged.
- The GGUF of a llama-architecture model stores q and k with their rows permuted for llama.cpp's
  rope layout, so the rows of the q and k lora_B (their output side) get the same permutation.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SotopiaError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# Hugging Face Llama projection -> llama.cpp tensor name inside block N.
MODULE_NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
REFUSED_MODULES = {"embed_tokens", "lm_head"}
SUPPORTED_ARCHITECTURES = {"llama"}
DTYPES: dict[str, type[np.floating]] = {"f16": np.float16, "f32": np.float32}

_PEFT_TENSOR = re.compile(
    r"^(?:base_model\.model\.)?(?:model\.)?layers\.(?P<layer>\d+)\."
    r"(?:self_attn|mlp)\.(?P<module>\w+?)\.lora_(?P<part>[AB])(?:\.\w+)?\.weight$"
)


class ConversionError(SotopiaError, ValueError):
    """The adapter cannot be converted for this base; the message says which tensor or setting."""


@dataclass(frozen=True)
class BaseModelInfo:
    """What the converter needs to know about the base GGUF."""

    architecture: str
    n_head: int
    n_head_kv: int
    shapes: dict[str, tuple[int, ...]]  # tensor name -> ggml shape (ne0 = input size first)


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float
    target_modules: tuple[str, ...]


def convert_peft_to_gguf(
    peft_dir: str | Path, base_gguf: str | Path, out_path: str | Path, dtype: str = "f16"
) -> Path:
    """Write the PEFT LoRA in `peft_dir` as a GGUF LoRA for the llama.cpp model `base_gguf`.

    Raises ConversionError when the adapter does not fit the base (another architecture, other
    shapes) or uses something llama.cpp LoRAs cannot express. The output appears atomically:
    an interrupted conversion leaves no file behind.
    """
    if dtype not in DTYPES:
        raise ConversionError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    peft_dir, out_path = Path(peft_dir), Path(out_path)
    settings = read_lora_settings(peft_dir)
    base = read_base_model(Path(base_gguf))
    tensors = _converted_tensors(_read_peft_tensors(peft_dir), base, DTYPES[dtype])
    _write_atomically(out_path, base.architecture, settings.alpha, tensors)
    return out_path


# -- reading ------------------------------------------------------------------------------------


def read_lora_settings(peft_dir: Path) -> LoraSettings:
    """Rank, alpha (as llama.cpp must see it) and target modules from adapter_config.json."""
    config_path = peft_dir / ADAPTER_CONFIG
    if not config_path.is_file():
        raise ConversionError(f"{peft_dir} has no {ADAPTER_CONFIG}, so it is not a PEFT adapter directory")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConversionError(f"{config_path} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{config_path} is not a JSON object")
    _refuse_unsupported_config(config, config_path)
    try:
        rank, alpha = int(config["r"]), float(config["lora_alpha"])
    except (KeyError, TypeError, ValueError):
        raise ConversionError(f"{config_path} needs numeric `r` and `lora_alpha`") from None
    if rank <= 0:
        raise ConversionError(f"{config_path}: rank r must be positive, not {rank}")
    if config.get("use_rslora"):
        if config.get("rank_pattern"):
            raise ConversionError(f"{config_path}: rsLoRA with a per-module rank_pattern has no single llama.cpp alpha")
        alpha *= math.sqrt(rank)  # PEFT scales by alpha/sqrt(r); llama.cpp by alpha'/r
    targets = config.get("target_modules") or []
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    return LoraSettings(rank=rank, alpha=alpha, target_modules=targets)


def _refuse_unsupported_config(config: dict, config_path: Path) -> None:
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise ConversionError(f"{config_path}: only LoRA adapters convert, this one is {peft_type}")
    if config.get("modules_to_save"):
        raise ConversionError(
            f"{config_path}: modules_to_save ({', '.join(config['modules_to_save'])}) trains whole "
            "modules, which a GGUF LoRA cannot carry; train LoRA on the projections only"
        )
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    refused = sorted(REFUSED_MODULES & set(targets))
    if refused:
        raise ConversionError(
            f"{config_path}: LoRA on {', '.join(refused)} is not supported (the embeddings are tied); "
            "target q/k/v/o/gate/up/down_proj only"
        )
    if config.get("use_dora"):
        raise ConversionError(f"{config_path}: DoRA adapters have no GGUF LoRA form")
    if config.get("bias", "none") != "none":
        raise ConversionError(f"{config_path}: LoRA bias terms (bias={config['bias']!r}) are not supported")
    if config.get("alpha_pattern"):
        raise ConversionError(f"{config_path}: a per-module alpha_pattern has no single llama.cpp alpha")


def read_base_model(base_gguf: Path) -> BaseModelInfo:
    """Architecture, head counts and tensor shapes of a base GGUF. gguf's reader parses the whole
    vocabulary (seconds), so the answer is kept per file version for this process."""
    if not base_gguf.is_file():
        raise ConversionError(f"base model {base_gguf} not found")
    stat = base_gguf.stat()
    return _read_base_model(base_gguf.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_base_model(base_gguf: Path, size: int, mtime_ns: int) -> BaseModelInfo:
    import gguf

    try:
        reader = gguf.GGUFReader(str(base_gguf))
    except Exception as error:  # gguf raises ValueError, struct.error, IndexError... on junk
        raise ConversionError(f"base model {base_gguf} is not a readable GGUF ({error})") from None
    architecture = _field(reader, "general.architecture")
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ConversionError(
            f"base model {base_gguf} has architecture {architecture!r}; the converter supports "
            f"{', '.join(sorted(SUPPORTED_ARCHITECTURES))} only (it must know how llama.cpp lays out q and k)"
        )
    n_head = _field(reader, f"{architecture}.attention.head_count")
    n_head_kv = _field(reader, f"{architecture}.attention.head_count_kv") or n_head
    if not isinstance(n_head, int) or not isinstance(n_head_kv, int):
        raise ConversionError(f"base model {base_gguf} does not give its attention head counts")
    shapes = {tensor.name: tuple(int(d) for d in tensor.shape) for tensor in reader.tensors}
    return BaseModelInfo(architecture=architecture, n_head=n_head, n_head_kv=n_head_kv, shapes=shapes)


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    value = field.contents()
    return int(value) if isinstance(value, (np.integer,)) else value


def _read_peft_tensors(peft_dir: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    weights = peft_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ConversionError(f"{peft_dir} has no {ADAPTER_WEIGHTS} (pickled adapter_model.bin is not read)")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError, TypeError) as error:
        raise ConversionError(f"{weights} is not a readable safetensors file: {error}") from None


# -- converting ---------------------------------------------------------------------------------


def gguf_tensor_name(peft_name: str) -> tuple[str, str]:
    """(llama.cpp base weight name, "a" or "b") for a PEFT LoRA tensor name."""
    if "modules_to_save" in peft_name:
        raise ConversionError(f"{peft_name}: modules_to_save weights cannot be carried by a GGUF LoRA")
    for module in REFUSED_MODULES:
        if f"{module}." in peft_name:
            raise ConversionError(f"{peft_name}: LoRA on {module} is not supported (the embeddings are tied)")
    match = _PEFT_TENSOR.match(peft_name)
    if match is None:
        raise ConversionError(f"{peft_name}: not a LoRA tensor of a Llama projection the converter knows")
    module = match["module"]
    if module not in MODULE_NAMES:
        raise ConversionError(
            f"{peft_name}: LoRA on {module!r} is not supported; use {', '.join(MODULE_NAMES)}"
        )
    return f"blk.{match['layer']}.{MODULE_NAMES[module]}.weight", match["part"].lower()


def rope_permute_rows(matrix: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder output rows the way llama.cpp's converter reorders q/k weights of llama models:
    Hugging Face keeps each head's rotary pairs as two halves (row i pairs with i + d/2), the
    GGUF interleaves them (rows 2i and 2i + 1); with one head of 6 rows: 0 3 1 4 2 5."""
    rows = matrix.shape[0]
    if rows % (2 * n_head):
        raise ConversionError(f"cannot permute {rows} rows into {n_head} rotary heads")
    return (
        matrix.reshape(n_head, 2, rows // n_head // 2, *matrix.shape[1:])
        .swapaxes(1, 2)
        .reshape(matrix.shape)
    )


def _converted_tensors(
    peft_tensors: dict[str, np.ndarray], base: BaseModelInfo, dtype: type[np.floating]
) -> dict[str, np.ndarray]:
    if not peft_tensors:
        raise ConversionError("the adapter has no tensors")
    out: dict[str, np.ndarray] = {}
    for peft_name, array in sorted(peft_tensors.items()):
        weight, part = gguf_tensor_name(peft_name)
        if array.ndim != 2:
            raise ConversionError(f"{peft_name}: expected a matrix, got shape {array.shape}")
        _check_shape(peft_name, weight, part, array, base)
        if part == "b" and weight.endswith((".attn_q.weight", ".attn_k.weight")):
            heads = base.n_head if ".attn_q." in weight else base.n_head_kv
            array = rope_permute_rows(array, heads)
        out[f"{weight}.lora_{part}"] = np.ascontiguousarray(array.astype(dtype))
    _check_pairs(out)
    return out


def _check_shape(peft_name: str, weight: str, part: str, array: np.ndarray, base: BaseModelInfo) -> None:
    if weight not in base.shapes:
        raise ConversionError(
            f"{peft_name}: the base model has no tensor {weight}, so this adapter was trained for another base"
        )
    n_in, n_out = base.shapes[weight][:2]
    expected_side = n_in if part == "a" else n_out
    actual_side = array.shape[1] if part == "a" else array.shape[0]
    if actual_side != expected_side:
        side = "input" if part == "a" else "output"
        raise ConversionError(
            f"{peft_name} has shape {tuple(array.shape)}, but {weight} of the base model has {side} "
            f"size {expected_side}: this adapter was trained for another base model"
        )


def _check_pairs(tensors: dict[str, np.ndarray]) -> None:
    weights = {name.rsplit(".lora_", 1)[0] for name in tensors}
    for weight in sorted(weights):
        a, b = tensors.get(f"{weight}.lora_a"), tensors.get(f"{weight}.lora_b")
        if a is None or b is None:
            raise ConversionError(f"{weight}: the adapter has lora_{'a' if a is None else 'b'} missing")
        if a.shape[0] != b.shape[1]:
            raise ConversionError(f"{weight}: lora_A rank {a.shape[0]} differs from lora_B rank {b.shape[1]}")


# -- writing ------------------------------------------------------------------------------------


def _write_atomically(out_path: Path, architecture: str, alpha: float, tensors: dict[str, np.ndarray]) -> None:
    import gguf

    out_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".partial", dir=out_path.parent)
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(temporary, arch=architecture)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for name, array in tensors.items():
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(temporary, 0o644)  # mkstemp makes it private; an adapter is an ordinary data file
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, out_path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
