"""Decode and prefill speed of the llama.cpp backend, by thread count and OpenMP wait policy,
and the prompt tokens served from the KV cache turn by turn.

    .venv/bin/python bench/llama_speed.py [--model embedded] [--tokens 128] [--turns 8]

Each (threads, policy) cell runs in a fresh process because libgomp reads OMP_WAIT_POLICY once,
when llama.cpp's library is loaded. "active" is libgomp's default (worker threads spin at every
barrier); "passive" (the backend's default) puts them to sleep. Spinning wins on an idle
machine and collapses when another process wants the same cores. Also prints the machine's
load average so that the figures can be read in context.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

PROMPT = "Write a long, detailed story about a bicycle shop in a small town."


def measure(model: str, threads: int, tokens: int) -> dict:
    from sotopia_pi.backends import create_backend
    from sotopia_pi.episode import ChatMessage

    with create_backend(model, n_threads=threads, seed=1) as backend:
        messages = [ChatMessage(role="user", content=PROMPT)]
        backend.complete(messages, max_tokens=4, temperature=0)  # warm-up
        long_prompt = [ChatMessage(role="user", content=(PROMPT + " ") * 25)]
        backend.reset_cache()
        started = time.perf_counter()
        prefill = backend.complete(long_prompt, max_tokens=1, temperature=0)
        prefill_s = time.perf_counter() - started
        backend.reset_cache()
        decode = backend.complete(messages, max_tokens=tokens, temperature=0)
    return {
        "prefill_tok_s": prefill.prompt_tokens / prefill_s,
        "decode_tok_s": decode.completion_tokens / (decode.latency_ms / 1000),
        "decode_tokens": decode.completion_tokens,
    }


def cached_per_turn(model: str, turns: int) -> list[tuple[int, int, int, float]]:
    from sotopia_pi.backends import create_backend
    from sotopia_pi.episode import ChatMessage, action_json_schema

    rows = []
    messages = [
        ChatMessage(role="system", content="You are Sam. Jordan sells a bike for $300; you want it for $200. Reply with one JSON action."),
        ChatMessage(role="user", content="Jordan: Hi, the bike is $300."),
    ]
    with create_backend(model, seed=3) as backend:
        for turn in range(turns):
            reply = backend.complete(messages, schema=action_json_schema(), max_tokens=120)
            rows.append((turn, reply.prompt_tokens, reply.cached_tokens, reply.latency_ms))
            messages += [
                ChatMessage(role="assistant", content=reply.text),
                ChatMessage(role="user", content=f"Jordan: (turn {turn}) I can't go lower than $280."),
            ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--child", nargs=2, metavar=("THREADS", "POLICY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, int(args.child[0]), args.tokens)))
        return

    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}")
    print(f"{'threads':>7} {'policy':>8} {'prefill tok/s':>14} {'decode tok/s':>13}")
    for threads in sorted({1, os.cpu_count() or 1}):
        for policy in ("active", "passive"):
            env = {**os.environ, "OMP_WAIT_POLICY": policy.upper()}
            output = subprocess.run(
                [sys.executable, __file__, "--model", args.model, "--tokens", str(args.tokens), "--child", str(threads), policy],
                env=env, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            result = json.loads(output.strip().splitlines()[-1])
            print(f"{threads:>7} {policy:>8} {result['prefill_tok_s']:>14.0f} {result['decode_tok_s']:>13.1f}")
    print(f"load average after: {os.getloadavg()}")

    print("\nprompt tokens from the KV cache, one agent, JSON actions (default threads and policy)")
    print(f"{'turn':>4} {'prompt':>7} {'cached':>7} {'computed':>9} {'latency ms':>11}")
    for turn, prompt, cached, latency in cached_per_turn(args.model, args.turns):
        print(f"{turn:>4} {prompt:>7} {cached:>7} {prompt - cached:>9} {latency:>11.0f}")


if __name__ == "__main__":
    main()
