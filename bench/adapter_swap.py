"""Adapter swap in place against reloading the model with the adapter, on the embedded model.

    .venv/bin/python bench/adapter_swap.py [--runs 7] [--threads 1] [--rank 8]

In place: `set_adapter(path)` on a running llama.cpp backend (load the GGUF LoRA, activate it,
drop the KV cache), then `set_adapter(None)` untimed before the next run. Reload: a new backend
for `embedded+adapter=PATH` (open the GGUF, build the context, load the LoRA), closed untimed.
Prints the median of each and the ratio (target: in place at least 10x faster), and checks that
both give the same greedy answer. Both apply the adapter at run time (SOTOPIA_PI_MERGE_ADAPTERS=0):
the app merges an adapter the embedded model opens with (bench/merged_adapter.py measures that).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

TARGET_SPEEDUP = 10.0


def seconds(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()

    from sotopia_pi.backends import create_backend
    from sotopia_pi.episode import ChatMessage
    from tests.lora_files import write_lora

    os.environ["SOTOPIA_PI_MERGE_ADAPTERS"] = "0"  # like against like: both at run time

    options = {"n_ctx": 2048, "n_threads": args.threads}
    question = [
        ChatMessage(role="system", content="You are a helpful assistant."),
        ChatMessage(role="user", content="What is the best way to learn Python?"),
    ]
    targets = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    with tempfile.TemporaryDirectory() as scratch:
        adapter = write_lora(Path(scratch) / "lora.gguf", targets=targets, rank=args.rank, amplitude=0.05)
        size_mib = adapter.stat().st_size / 2**20

        with create_backend("embedded", **options) as running:
            in_place = []
            for _ in range(args.runs):
                in_place.append(seconds(lambda: running.set_adapter(adapter)))
                swapped_answer = running.complete(question, max_tokens=16, temperature=0).text
                running.set_adapter(None)

        reload = []
        for _ in range(args.runs):
            holder = {}
            reload.append(
                seconds(lambda holder=holder: holder.update(backend=create_backend(f"embedded+adapter={adapter}", **options)))
            )
            reloaded_answer = holder["backend"].complete(question, max_tokens=16, temperature=0).text
            holder["backend"].close()

    swap, load = statistics.median(in_place), statistics.median(reload)
    speedup = load / swap
    print(f"adapter: rank {args.rank} on all 7 projections x 30 layers, {size_mib:.1f} MiB f32; "
          f"{args.runs} runs, {args.threads} thread(s)")  # fmt: skip
    print(
        f"swap in place (set_adapter)         median {swap * 1000:8.1f} ms  "
        f"(min {min(in_place) * 1000:.1f}, max {max(in_place) * 1000:.1f})"
    )
    print(f"reload with the adapter (new model) median {load * 1000:8.1f} ms  (min {min(reload) * 1000:.1f}, max {max(reload) * 1000:.1f})")
    print(f"in place is {speedup:.1f}x faster (target >= {TARGET_SPEEDUP:.0f}x: {'met' if speedup >= TARGET_SPEEDUP else 'NOT met'})")
    print(f"same greedy answer after swap and after reload: {swapped_answer == reloaded_answer}")


if __name__ == "__main__":
    main()
