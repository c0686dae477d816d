"""GGUF LoRA files for tests and benches, written directly with the gguf package.

    write_lora(path)                         random LoRA on the embedded model's q and v projections
    write_lora(path, targets=("attn_output",), rank=8, seed=3)
    write_lora(path, wrong_shapes=True)      same names, input width off by 64: llama.cpp refuses it
    write_lora(path, arch="qwen2")           an adapter for another architecture
    write_garbage(path), write_truncated(path, source)

Tensor shapes are read from the base GGUF (the embedded SmolLM2 by default), so the adapter fits
whatever base it is made for. Layout (llama.cpp's src/llama-adapter.cpp, feasibility §5): for a
base tensor `blk.N.attn_q.weight` the file holds `blk.N.attn_q.weight.lora_a`, numpy shape
(r, n_in), and `.lora_b`, numpy shape (n_out, r); general.type=adapter, adapter.type=lora and
adapter.lora.alpha (the effective scale is alpha / r).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import gguf
import numpy as np


@cache
def base_shapes(model_path: str | None = None) -> dict[str, tuple[int, int]]:
    """{base tensor name: (n_in, n_out)} for the 2-D weights of a GGUF (ggml order: ne0 = n_in)."""
    if model_path is None:
        from sotopia_pi.catalog import embedded_model_path

        model_path = str(embedded_model_path())
    reader = gguf.GGUFReader(model_path)
    return {
        tensor.name: (int(tensor.shape[0]), int(tensor.shape[1]))
        for tensor in reader.tensors
        if tensor.name.startswith("blk.") and len(tensor.shape) == 2
    }


def write_lora(
    path: str | Path,
    *,
    targets: tuple[str, ...] = ("attn_q", "attn_v"),
    rank: int = 4,
    alpha: float | None = None,
    amplitude: float = 0.2,
    seed: int = 0,
    arch: str = "llama",
    wrong_shapes: bool = False,
    model_path: str | None = None,
) -> Path:
    """A random LoRA on every layer's `targets` projections of the base model. Returns `path`."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    wanted = {f".{target}.weight" for target in targets}
    shapes = {name: shape for name, shape in base_shapes(model_path).items() if name[name.index(".", 4) :] in wanted}
    if not shapes:
        raise ValueError(f"no base tensors for targets {targets}")
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha if alpha is not None else rank))
    for name, (n_in, n_out) in sorted(shapes.items()):
        if wrong_shapes:
            n_in += 64
        lora_a = rng.standard_normal((rank, n_in)) * amplitude
        lora_b = rng.standard_normal((n_out, rank)) * amplitude
        writer.add_tensor(f"{name}.lora_a", lora_a.astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", lora_b.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_garbage(path: str | Path, size: int = 4096) -> Path:
    """Random bytes under a .gguf name."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(1).bytes(size))
    return path


def write_truncated(path: str | Path, source: str | Path, keep: float = 0.5) -> Path:
    """The first `keep` share of a real GGUF file: a valid header, tensor data cut short."""
    path = Path(path)
    data = Path(source).read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
