"""Everything that reaches below llama-cpp-python's public API lives here (pinned to 0.3.36).

- `open_llama`: loads a GGUF safely on CPUs whose AMX units crash llama.cpp (see below).
- `LoraHandle`: runtime LoRA adapters through llama.cpp's low-level calls on a running Llama.
- `grammar_is_valid`: asks llama.cpp itself whether a GBNF grammar parses.
- `EvalMeter`: counts, exactly, how many prompt tokens one call took from the KV cache.
- `chat_prompt_tokens`, `keep_cached_prefix`, `read_prompt`, `logits_after`, `logits_along`: a
  chat prompt's tokens exactly as `create_chat_completion` makes them, read into the KV cache
  behind its cached prefix, and the logits after one token or after each of several, for
  decoding without llama-cpp-python's sampler (`LlamaCppBackend.fill_choices`, `read_ahead`).

Why AMX: llama.cpp built with GGML_NATIVE on a CPU that reports AMX puts quantized weights in an
AMX "extra buffer"; under some hypervisors the first multi-token decode then dies with a general
protection fault on `ldtilecfg` (seen on this project's Xeon VMs). Loading with
`use_extra_bufts = False` keeps the ordinary CPU kernels and works everywhere. The setting is not
exposed by `Llama(...)`, so we patch the default model parameters once per process.
Set SOTOPIA_PI_LLAMA_EXTRA_BUFFERS=1 to keep the extra buffers, =0 to drop them on any CPU.

Why OMP_WAIT_POLICY: llama.cpp's CPU threads meet at OpenMP barriers, and libgomp's default is to
spin there. When another process wants the same cores (two agents, a trainer, a busy laptop)
spinning threads starve each other: decode on two threads fell from ~20 to ~3 tokens/s on a
loaded two-core machine (bench/llama_speed.py), while PASSIVE stays close to one free core's
speed. libgomp reads the variable once, when llama.cpp's library loads, so it is set here,
before the first `import llama_cpp`, unless the user set it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import llama_cpp  # noqa: E402 - after the OpenMP policy above
import llama_cpp._logger as llama_logger  # noqa: E402
import numpy as np  # noqa: E402
from llama_cpp import Llama, llama_chat_format  # noqa: E402

from ..errors import SotopiaError  # noqa: E402

EXTRA_BUFFERS_ENV = "SOTOPIA_PI_LLAMA_EXTRA_BUFFERS"

_patch_lock = threading.Lock()
_patched = False
_llama_locks: weakref.WeakKeyDictionary[Llama, threading.RLock] = weakref.WeakKeyDictionary()
_llama_locks_guard = threading.Lock()
_log_lock = threading.Lock()


class NativeError(SotopiaError, RuntimeError):
    """llama.cpp refused something; the message says what and why."""


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return "amx_tile" in line.split()
    except OSError:
        pass
    return False


def extra_buffers_wanted() -> bool:
    setting = os.environ.get(EXTRA_BUFFERS_ENV, "").strip().lower()
    if setting in {"1", "true", "yes", "on"}:
        return True
    if setting in {"0", "false", "no", "off"}:
        return False
    return not cpu_has_amx()


def make_model_loading_safe() -> None:
    """Make every Llama this process loads from now on avoid the crashing AMX path (idempotent)."""
    global _patched
    with _patch_lock:
        if _patched or extra_buffers_wanted():
            return
        default_params = llama_cpp.llama_cpp.llama_model_default_params

        def params_without_extra_buffers():
            params = default_params()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_cpp.llama_model_default_params = params_without_extra_buffers
        _patched = True


def open_llama(model_path: str | Path, **kwargs) -> Llama:
    """Load a GGUF with llama-cpp-python. Use this instead of `Llama(...)` anywhere in the project."""
    make_model_loading_safe()
    kwargs.setdefault("verbose", False)
    return Llama(model_path=str(model_path), **kwargs)


def lock_for(llm: Llama) -> threading.RLock:
    """One lock per Llama object, shared by every backend that uses it."""
    with _llama_locks_guard:
        lock = _llama_locks.get(llm)
        if lock is None:
            lock = _llama_locks[llm] = threading.RLock()
        return lock


@contextlib.contextmanager
def captured_llama_log() -> Iterator[list[str]]:
    """Collect llama.cpp's log lines for the duration (to explain a failure), then restore."""
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", errors="replace"))

    with _log_lock:
        llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
        try:
            yield lines
        finally:
            llama_cpp.llama_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))


def _error_lines(lines: list[str]) -> str:
    text = "".join(lines)
    wanted = [
        line.strip()
        for line in text.splitlines()
        if any(word in line.lower() for word in ("error", "fail", "invalid", "mismatch", "incorrect"))
    ]
    return "; ".join(wanted[-3:])


def grammar_is_valid(llm: Llama, grammar: str) -> str | None:
    """None if llama.cpp parses the grammar, else its reason."""
    with captured_llama_log() as lines:
        sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        return _error_lines(lines) or "llama.cpp could not parse the grammar"
    llama_cpp.llama_sampler_free(sampler)
    return None


class LoraHandle:
    """A LoRA adapter loaded into a Llama's model and (optionally) active on its context.

    llama-cpp-python 0.3.36 has no swap API: we use llama_adapter_lora_init /
    llama_set_adapters_lora / llama_adapter_lora_free on the private `_model` and `_ctx`.
    """

    def __init__(self, llm: Llama, path: Path, pointer) -> None:
        self.llm = llm
        self.path = path
        self._pointer = pointer

    @classmethod
    def load(cls, llm: Llama, path: str | Path) -> LoraHandle:
        path = Path(path)
        with captured_llama_log() as lines:
            pointer = llama_cpp.llama_adapter_lora_init(llm._model.model, str(path).encode("utf-8"))
        if not pointer:
            reason = _error_lines(lines) or "llama.cpp gave no reason"
            raise NativeError(f"llama.cpp rejected LoRA adapter {path}: {reason}")
        return cls(llm, path, pointer)

    def activate(self, scale: float) -> None:
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._pointer)
        scales = (ctypes.c_float * 1)(scale)
        status = llama_cpp.llama_set_adapters_lora(self.llm._ctx.ctx, adapters, 1, scales)
        if status != 0:
            raise NativeError(f"llama.cpp could not activate LoRA adapter {self.path} (status {status})")

    def free(self) -> None:
        if self._pointer:
            llama_cpp.llama_adapter_lora_free(self._pointer)
            self._pointer = None


def clear_adapters(llm: Llama) -> None:
    status = llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, None, 0, None)
    if status != 0:
        raise NativeError(f"llama.cpp could not clear the LoRA adapters (status {status})")


class EvalMeter:
    """Counts, for one generation on one Llama, the prompt tokens reused from the KV cache.

    `Llama.generate` keeps the longest prefix it already holds, truncates `n_tokens` to it and
    then makes exactly one `eval` call for the rest of the prompt (possibly empty) before the
    first sample; every later `eval` call feeds back one sampled token. So at the first `eval`
    call, `n_tokens` is the cached prefix and `len(tokens)` the prompt tokens computed afresh.
    The wrapper is installed on the instance only while the caller holds the Llama's lock.
    """

    def __init__(self, llm: Llama) -> None:
        self.llm = llm
        self.cached_tokens = 0
        self.evaluated_prompt_tokens = 0
        self.prompt_tokens = 0
        self.evals = 0

    def _eval(self, tokens) -> None:
        if self.evals == 0:
            self.cached_tokens = self.llm.n_tokens
            self.evaluated_prompt_tokens = len(tokens)
        self.evals += 1
        type(self.llm).eval(self.llm, tokens)
        if self.evals == 1:
            self.prompt_tokens = self.llm.n_tokens

    @property
    def sampled_tokens(self) -> int:
        """Tokens sampled so far: the first eval was the prompt, and every sampled token but
        the last was fed back through one more eval."""
        return self.evals

    @contextlib.contextmanager
    def installed(self) -> Iterator[EvalMeter]:
        self.llm.eval = self._eval  # type: ignore[method-assign]  # on purpose: an instance attribute shadows the method
        try:
            yield self
        finally:
            del self.llm.eval


class _PromptTaken(SotopiaError):
    def __init__(self, tokens: list[int]) -> None:
        super().__init__("prompt taken")
        self.tokens = tokens


class _PromptTaker:
    """Stands in for a Llama in llama-cpp-python's chat handler: the handler formats and
    tokenizes the messages as `create_chat_completion` would, then hands its prompt tokens
    here instead of generating."""

    def __init__(self, llm: Llama) -> None:
        self._llm = llm

    def __getattr__(self, name: str):
        return getattr(self._llm, name)

    def create_completion(self, prompt, **_options):
        raise _PromptTaken(list(prompt))


def chat_prompt_tokens(llm: Llama, chat: list[dict]) -> list[int]:
    """The prompt tokens `llm.create_chat_completion(chat)` would read (same chat template, same
    tokenization), so that both ways of calling the model share one KV cache prefix."""
    handler = llm.chat_handler
    if handler is None:
        if llm.chat_format is None:
            raise NativeError("the model has no chat format to build a prompt with")
        handler = llm._chat_handlers.get(llm.chat_format) or llama_chat_format.get_chat_completion_handler(
            llm.chat_format
        )
    try:
        # The stand-in takes the place of the Llama (it only receives the prompt); `chat` holds the
        # same message dicts create_chat_completion is given.
        handler(llama=_PromptTaker(llm), messages=chat)  # type: ignore[arg-type]
    except _PromptTaken as taken:
        return taken.tokens
    raise NativeError(f"the chat format {llm.chat_format!r} made no prompt")


def keep_cached_prefix(llm: Llama, tokens: list[int]) -> int:
    """Keep, of what the KV cache holds, the longest prefix of `tokens` (as `Llama.generate`
    does); its length. The cells after it are dropped by the next `Llama.eval`."""
    held = llm.input_ids[: llm.n_tokens]
    length = min(len(held), len(tokens))
    differ = np.flatnonzero(held[:length] != np.asarray(tokens[:length], dtype=held.dtype))
    llm.n_tokens = int(differ[0]) if differ.size else length
    return llm.n_tokens


def read_prompt(llm: Llama, tokens: list[int]) -> tuple[int, np.ndarray]:
    """Read `tokens` into the KV cache behind the prefix it already holds (at least the last
    token is read again, for its logits). Returns the number of tokens taken from the cache and
    the logits of the token that follows."""
    cached = min(keep_cached_prefix(llm, tokens), len(tokens) - 1)
    llm.n_tokens = cached
    return cached, logits_after(llm, tokens[cached:])


def logits_along(llm: Llama, tokens: list[int], first: int) -> np.ndarray:
    """Read `tokens` after what the KV cache holds; the logits after each of `tokens[first:]`,
    copied, one row each. The rows come from one decode (those before it in ordinary batches),
    so checking a guessed continuation costs one decode instead of one per token."""
    head = max(0, min(first, len(tokens) - llm.n_batch))
    if head:
        llm.eval(tokens[:head])
    rest, wanted = tokens[head:], first - head
    n_past = llm.n_tokens
    llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
    llm._batch.set_batch(batch=rest, n_past=n_past, logits_all=False)
    for index in range(wanted, len(rest)):
        llm._batch.batch.logits[index] = True
    llm._ctx.decode(llm._batch)
    llm.input_ids[n_past : n_past + len(rest)] = rest
    llm.n_tokens += len(rest)
    vocabulary = llm.n_vocab()
    return np.stack(
        [
            np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, index), shape=(vocabulary,))
            for index in range(wanted, len(rest))
        ]
    )


def logits_after(llm: Llama, tokens: list[int]) -> np.ndarray:
    """Read `tokens` after what the KV cache holds; the logits of the token that follows (a view
    into llama.cpp's buffer, valid until the next decode)."""
    llm.eval(tokens)
    pointer = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),))
