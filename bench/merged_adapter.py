"""An adapter applied at run time against the same adapter merged into the base GGUF.

    .venv/bin/python bench/merged_adapter.py [--adapter models/adapters/embedded-bc.gguf] [--prompts 16]

Uses a throwaway SOTOPIA_PI_HOME with the expert corpus imported, and the held-out expert turns
as prompts. Prints, for the base model, the base with the LoRA at run time, and the merged copy
(what `embedded` loads): seconds to merge, per-token NLL of the expert's answers read through
llama.cpp, and ms per prompt token read and per token generated on the same prompts (greedy, 64
tokens). The merged copy should match the run-time LoRA's NLL and the base's speed. (Merging
keeps the adapted weights as Q8_0: requantized to the base's Q4_1 they lost most of the adapter,
NLL 2.710 against 2.280 at run time on 24 prompts.)
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def heldout_examples(count: int, seed: int = 5):
    from sotopia_pi.dataset.examples import build_examples
    from sotopia_pi.dataset.frozen import freeze_episode
    from sotopia_pi.episode_import import import_expert_corpus
    from sotopia_pi.library import ensure_library
    from sotopia_pi.store import Store

    store = Store()
    ensure_library(store)
    import_expert_corpus(store)
    ids = [e.id for e in store.episodes() if "split:heldout" in e.tags and "quality:expert" in e.tags]
    frozen = [freeze_episode(store, i) for i in ids]
    examples = build_examples(frozen, [(f.id, side) for f in frozen for side in (0, 1)])
    return random.Random(seed).sample(examples, min(count, len(examples)))


def answer_nll(llm, prompt: list[int], answer: list[int]) -> tuple[float, int]:
    from sotopia_pi.backends.llama_native import logits_along

    llm.reset()
    rows = logits_along(llm, prompt + answer, len(prompt) - 1)[: len(answer)]
    rows = rows.astype(np.float64)
    log_norm = np.log(np.exp(rows - rows.max(axis=1, keepdims=True)).sum(axis=1)) + rows.max(axis=1)
    picked = rows[np.arange(len(answer)), answer]
    return float((log_norm - picked).sum()), len(answer)


def measure(label: str, backend, examples) -> dict:
    from sotopia_pi.backends.llama_native import chat_prompt_tokens

    llm = backend.llm
    nll = tokens = 0.0
    read_ms = read_tokens = write_ms = write_tokens = 0.0
    for example in examples:
        chat = [{"role": m.role, "content": m.content} for m in example.prompt]
        prompt = chat_prompt_tokens(llm, chat)
        answer = llm.tokenize((example.completion + "<|im_end|>").encode("utf-8"), add_bos=False, special=True)
        total, count = answer_nll(llm, prompt, answer)
        nll, tokens = nll + total, tokens + count
        backend.reset_cache()
        read = backend.read_ahead(example.prompt)
        read_ms, read_tokens = read_ms + read.latency_ms, read_tokens + read.prompt_tokens
        completion = backend.complete(example.prompt, max_tokens=64, temperature=0.0)
        write_ms, write_tokens = write_ms + completion.latency_ms, write_tokens + completion.completion_tokens
    figures = {
        "nll": nll / tokens,
        "read_ms": read_ms / max(read_tokens, 1),
        "write_ms": write_ms / max(write_tokens, 1),
    }
    print(
        f"{label:18s} NLL {figures['nll']:.3f} over {int(tokens)} answer tokens; reading "
        f"{figures['read_ms']:.2f} ms/token, generating {figures['write_ms']:.1f} ms/token",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter", type=Path, default=REPO / "models" / "adapters" / "embedded-bc.gguf")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    os.environ["SOTOPIA_PI_HOME"] = tempfile.mkdtemp(prefix="merged-adapter-")

    from sotopia_pi.backends.base import ModelSpec
    from sotopia_pi.backends.llama_cpp_backend import MERGED_WEIGHT_TYPE, LlamaCppBackend
    from sotopia_pi.backends.lora_merge import merged_model_path
    from sotopia_pi.catalog import embedded_model_path

    examples = heldout_examples(options.prompts)
    started = time.perf_counter()
    merged_model_path(embedded_model_path(), options.adapter, 1.0, MERGED_WEIGHT_TYPE)
    print(f"merged {options.adapter.name} into the base in {time.perf_counter() - started:.1f} s")
    base = ModelSpec(kind="embedded-base")
    figures = {}
    for label in ("base", "run-time LoRA", "merged"):
        spec = base.with_adapter(str(options.adapter)) if label == "merged" else base
        backend = LlamaCppBackend.from_spec(spec, n_threads=options.threads, seed=3)
        if label == "run-time LoRA":
            backend.set_adapter(options.adapter)  # a swap in place: applied at run time
        assert backend.adapter_merged == (label == "merged")
        try:
            figures[label] = measure(label, backend, examples)
        finally:
            backend.close()
    base = figures["base"]
    for label in ("run-time LoRA", "merged"):
        own = figures[label]
        print(
            f"{label}: NLL {(base['nll'] - own['nll']) / base['nll']:.1%} below the base; "
            f"{own['read_ms'] / base['read_ms']:.2f}x the base's reading, "
            f"{own['write_ms'] / base['write_ms']:.2f}x its generating"
        )


if __name__ == "__main__":
    main()
