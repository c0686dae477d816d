"""Copy a registered adapter into models/adapters/ as the project ships it.

    .venv/bin/python scripts/ship_adapter.py RECORD.json NAME

RECORD.json is what `sotopia-pi train --json` printed (the registered AdapterRecord). Writes
models/adapters/NAME.gguf (the GGUF LoRA llama.cpp runs), models/adapters/NAME/ (the PEFT
adapter in f16 safetensors, for transformers and the benchmarks) and models/adapters/NAME.json
(provenance: base and its digest, snapshot and its digest, hyperparameters, figures).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "adapters"
KEPT_METRICS = (
    "heldout_loss_base", "heldout_loss_adapter", "eval_losses", "train_loss", "final_loss", "steps", "epochs",
    "train_seconds", "tokens_per_s", "device", "peak_rss_mb", "train_examples", "eval_examples", "answers", "layout",
)  # fmt: skip


def main(record_path: str, name: str) -> None:
    record = json.loads(Path(record_path).read_text())
    SHIPPED.mkdir(parents=True, exist_ok=True)
    if not record.get("gguf_path"):
        raise SystemExit(f"{record['name']} has no GGUF LoRA to ship")
    shutil.copyfile(record["gguf_path"], SHIPPED / f"{name}.gguf")
    peft_out = SHIPPED / name
    shutil.rmtree(peft_out, ignore_errors=True)
    peft_out.mkdir()
    source = Path(record["peft_dir"])
    shutil.copyfile(source / "adapter_config.json", peft_out / "adapter_config.json")
    tensors = load_file(str(source / "adapter_model.safetensors"))
    save_file({key: value.astype(np.float16) for key, value in tensors.items()}, str(peft_out / "adapter_model.safetensors"))
    provenance = {
        "name": name,
        "trained_as": f"{record['name']}@v{record['version']}",
        "base_model": record["base_model"],
        "base_digest": record["base_digest"],
        "snapshot": record["snapshot"],
        "snapshot_digest": record["snapshot_digest"],
        "hyperparameters": record["hyperparameters"],
        "metrics": {key: record["metrics"].get(key) for key in KEPT_METRICS},
        "created_at": record["created_at"],
        "reproduce": "bash scripts/train_shipped_adapters.sh",
    }
    (SHIPPED / f"{name}.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"shipped {name}: {SHIPPED / (name + '.gguf')} and {peft_out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
