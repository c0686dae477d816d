"""How long taking over a side waits when the model is still reading its prompt, and what reading
the prompt in slices costs.

    .venv/bin/python bench/takeover_wait.py [--prompt-tokens 1500] [--repeats 5]

The embedded model reads a long prompt (an episode's opening turn with a long history); a cancel
(what a takeover sends) comes 0.2 s after the call starts. Prints, for slices of 128 tokens (the
backend's setting) and for the whole prompt in one read (the behaviour before slicing):

- seconds from the cancel to the call giving up (what the person waits for the input box);
- seconds to read the whole prompt and answer one token when nothing cancels.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sotopia_pi.backends import (  # noqa: E402
    Cancelled,
    create_backend,
    llama_cpp_backend,
)
from sotopia_pi.episode import ChatMessage  # noqa: E402

SENTENCE = "Mara keeps the stall's ledger in pencil and rubs out nothing, even her mistakes. "


def long_chat(tokens: int) -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content=SENTENCE * (tokens // 18)),
        ChatMessage(role="user", content="What do you say to Mara?"),
    ]


def wait_after_cancel(backend, chat: list[ChatMessage], delay: float) -> float:
    backend.reset_cache()
    cancel = threading.Event()
    cancelled_at: list[float] = []

    def cancel_later() -> None:
        time.sleep(delay)
        cancelled_at.append(time.perf_counter())
        cancel.set()

    threading.Thread(target=cancel_later).start()
    try:
        backend.complete(chat, max_tokens=64, cancel=cancel)
    except Cancelled:
        pass
    return time.perf_counter() - cancelled_at[0] if cancelled_at else 0.0


def full_read(backend, chat: list[ChatMessage]) -> tuple[float, int]:
    backend.reset_cache()
    started = time.perf_counter()
    reply = backend.complete(chat, max_tokens=1, cancel=threading.Event())
    return time.perf_counter() - started, reply.prompt_tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompt-tokens", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    chat = long_chat(options.prompt_tokens)
    sliced = llama_cpp_backend.PROMPT_SLICE_TOKENS
    with create_backend("embedded-base", seed=1, n_ctx=4096, n_threads=2) as backend:
        for label, slice_tokens in ((f"slices of {sliced}", sliced), ("one read", 1_000_000)):
            llama_cpp_backend.PROMPT_SLICE_TOKENS = slice_tokens
            waits = [wait_after_cancel(backend, chat, 0.2) for _ in range(options.repeats)]
            reads = [full_read(backend, chat) for _ in range(options.repeats)]
            print(
                f"{label:15s} prompt {reads[0][1]} tokens: wait after a cancel {statistics.median(waits):.2f} s "
                f"(max {max(waits):.2f}); whole read + 1 token {statistics.median(t for t, _ in reads):.2f} s"
            )


if __name__ == "__main__":
    main()
