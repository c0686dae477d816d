"""Folding a GGUF LoRA into a cached copy of the embedded base (sotopia_pi/backends/lora_merge.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from sotopia_pi.backends import BackendError
from sotopia_pi.backends.lora_merge import merged_model_path, write_merged_gguf
from sotopia_pi.catalog import embedded_model_path

from .lora_files import write_lora


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("SOTOPIA_PI_MERGE_CACHE", str(folder))
    return folder


def tensor(reader: gguf.GGUFReader, name: str) -> np.ndarray:
    found = next(t for t in reader.tensors if t.name == name)
    columns, rows = (int(n) for n in found.shape[:2])
    return gguf.quants.dequantize(found.data, found.tensor_type).reshape(rows, columns)


def test_merged_weights_are_the_base_plus_the_scaled_lora_product(tmp_path: Path):
    adapter = write_lora(tmp_path / "lora.gguf", targets=("attn_q",), rank=4, alpha=8.0, amplitude=0.1)
    out = tmp_path / "merged.gguf"
    write_merged_gguf(embedded_model_path(), adapter, out, scale=0.5, weight_type=gguf.GGMLQuantizationType.F32)
    base, lora, merged = (gguf.GGUFReader(str(p)) for p in (embedded_model_path(), adapter, out))
    name = "blk.3.attn_q.weight"
    a, b = tensor(lora, f"{name}.lora_a"), tensor(lora, f"{name}.lora_b")
    expected = tensor(base, name) + 0.5 * (8.0 / 4) * (b @ a)
    assert np.allclose(tensor(merged, name), expected, atol=1e-5)
    # tensors the adapter leaves alone are copied byte for byte, metadata too
    assert np.array_equal(tensor(merged, "blk.3.attn_v.weight"), tensor(base, "blk.3.attn_v.weight"))
    assert len(merged.tensors) == len(base.tensors)
    assert merged.fields["tokenizer.chat_template"].contents() == base.fields["tokenizer.chat_template"].contents()
    assert merged.fields["sotopia_pi.merged_adapter"].contents() == "lora.gguf x0.5"


def test_the_cache_is_reused_and_a_changed_adapter_replaces_its_old_merge(tmp_path: Path, cache: Path):
    adapter = write_lora(tmp_path / "lora.gguf", targets=("attn_v",))
    first = merged_model_path(embedded_model_path(), adapter)
    written = first.stat().st_mtime_ns
    assert merged_model_path(embedded_model_path(), adapter) == first
    assert first.stat().st_mtime_ns == written  # not merged again

    time.sleep(0.01)
    write_lora(adapter, targets=("attn_v",), seed=1)  # retrained in place
    os.utime(adapter, ns=(time.time_ns(), time.time_ns()))
    second = merged_model_path(embedded_model_path(), adapter)
    assert second != first and second.is_file() and not first.exists()
    assert not list(cache.glob(".merging-*"))


def test_an_adapter_that_does_not_fit_is_refused_and_nothing_is_cached(tmp_path: Path, cache: Path):
    wide = write_lora(tmp_path / "wide.gguf", targets=("attn_q",), wrong_shapes=True)
    with pytest.raises(BackendError, match="do not fit blk"):
        merged_model_path(embedded_model_path(), wide)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf" * 10)
    with pytest.raises(BackendError, match="cannot read"):
        merged_model_path(embedded_model_path(), junk)
    assert list(cache.iterdir()) == []
