"""The llama.cpp backend: the embedded SmolLM2 GGUF, any local GGUF, or a pulled catalog GGUF.

Each backend owns one Llama object (one KV cache). Give each agent its own backend and keep its
message list append-only: llama-cpp-python then reuses the cached prefix and a turn costs only
the new tokens. One Llama shared by two agents re-evaluates almost the whole prompt every turn;
`llama=` allows sharing anyway so that a benchmark can measure exactly that.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any, cast

# llama_native first: it sets llama.cpp's OpenMP wait policy, which must precede `import llama_cpp`.
from .llama_native import (  # isort: skip
    EvalMeter,
    LoraHandle,
    NativeError,
    chat_prompt_tokens,
    clear_adapters,
    grammar_is_valid,
    keep_cached_prefix,
    lock_for,
    logits_along,
    open_llama,
)
import llama_cpp  # noqa: E402
import numpy as np  # noqa: E402
from gguf import GGMLQuantizationType  # noqa: E402
from llama_cpp import Llama  # noqa: E402
from llama_cpp.llama_grammar import LlamaGrammar  # noqa: E402
from llama_cpp.llama_types import CreateChatCompletionStreamResponse  # noqa: E402

from ..catalog import CatalogError, embedded_model_path, require_pulled  # noqa: E402
from ..episode import ChatMessage  # noqa: E402
from ..errors import SotopiaError  # noqa: E402
from .base import BackendError, Cancelled, Completion, ModelSpec, TokenCallback, start_with_adapter  # noqa: E402
from .lora_merge import merged_model_path, merging_wanted  # noqa: E402
from .schema import SchemaError, grammar_for_schema  # noqa: E402

# Sampling defaults measured to keep SmolLM2 on topic without looping (feasibility §1).
# A light repeat penalty: at 1.1 the shipped agent adapter wrote an empty argument in about half
# its turns (the penalty falls on the JSON's own quotes and keys); bench/empty_turns.py measures it.
DEFAULT_SAMPLING = {"top_p": 0.9, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.05}
# Tokens `read_ahead` leaves unread: the chat template's end of message (6 with ChatML) and a
# last word, which the prompt that extends this one may tokenize differently.
READ_AHEAD_HOLD_BACK = 8
# llama.cpp sees a cancel only between generated tokens, so a prompt is read this many tokens at
# a time with a check between slices: taking over a side waits at most one slice (~0.3 s here).
PROMPT_SLICE_TOKENS = 128
logger = logging.getLogger(__name__)
SAMPLING_KEYS = {"top_p", "top_k", "min_p", "typical_p", "repeat_penalty", "presence_penalty", "frequency_penalty"}


# Kinds whose adapters are merged into the weights when the model opens, and the type the merged
# weights are stored in: Q8_0 keeps the adapter's change (requantizing to the base's Q4_1 lost
# most of it) and runs faster than Q4_1 here (bench/merged_adapter.py).
MERGED_KINDS = {"embedded", "embedded-base"}
MERGED_WEIGHT_TYPE = GGMLQuantizationType.Q8_0


class LlamaOpener:
    """Opens a model file with the options a backend was built with (its base by default)."""

    def __init__(self, path: Path, **options: Any) -> None:
        self.path = path
        self.options = options

    def open(self, path: Path | None = None, **overrides: Any) -> Llama:
        path = path or self.path
        try:
            return open_llama(path, **{**self.options, **overrides})
        except (ValueError, RuntimeError) as error:
            raise BackendError(f"llama.cpp could not load {path}: {error}") from error


def resolve_model_path(spec: ModelSpec) -> Path:
    """The GGUF file a llama.cpp model name stands for."""
    if spec.kind == "gguf":
        path = Path(spec.target).expanduser()
        if not path.is_file():
            raise BackendError(f"GGUF file not found: {path}")
        return path
    try:
        if spec.kind in {"embedded", "embedded-base"}:
            return embedded_model_path()
        if spec.kind == "catalog":
            return require_pulled(spec.target)
    except CatalogError as error:
        raise BackendError(str(error)) from None
    raise BackendError(f"{spec.name} is not a llama.cpp model (use embedded, gguf:PATH or catalog:NAME)")


class LlamaCppBackend:
    """ChatBackend and AdapterSwapping on llama-cpp-python. Thread-safe: one lock per Llama object.

    `spec` is the model this backend runs now; `set_adapter` changes its adapter (and so `name`).

    An adapter the embedded model opens with is folded into a cached copy of its weights
    (lora_merge): at run time llama.cpp's LoRA doubled the time per generated token of this
    small model. Swaps while running apply the adapter at run time on the bare base, in place.
    """

    def __init__(
        self,
        llm: Llama,
        *,
        spec: ModelSpec,
        owns_llama: bool = True,
        seed: int | None = None,
        opener: LlamaOpener | None = None,
        **sampling: float,
    ) -> None:
        unknown = set(sampling) - SAMPLING_KEYS
        if unknown:
            raise BackendError(f"unknown llama.cpp option(s): {', '.join(sorted(unknown))}")
        self.spec = spec.with_adapter(None)  # the adapter is added once it is loaded
        self.llm = llm
        self._owns_llama = owns_llama
        self._lock = lock_for(llm)
        self._sampling = {**DEFAULT_SAMPLING, **sampling}
        self._seeds = random.Random(seed)
        self._grammars: dict[str, LlamaGrammar] = {}
        self._lora: LoraHandle | None = None  # an adapter applied at run time
        self._merged: Path | None = None  # an adapter folded into the loaded weights
        self._opener = opener  # opens the base again, or a merged copy of it
        self._state_llm: Llama | None = None  # the same weights in embedding mode (prompt_state)
        self.adapter_scale = 1.0
        self._closed = False

    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec,
        *,
        llama: Llama | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int | None = None,
        chat_format: str | None = None,
        **sampling: float,
    ) -> LlamaCppBackend:
        """Build a backend for `embedded`, `gguf:PATH` or `catalog:NAME` (+adapter=PATH)."""
        opener = None
        if llama is None:
            threads = n_threads or os.cpu_count() or 1
            opener = LlamaOpener(
                resolve_model_path(spec),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                seed=seed if seed is not None else 0xC0FFEE,
                chat_format=chat_format,
            )
            llama = opener.open()
        backend = cls(llama, spec=spec, owns_llama=opener is not None, seed=seed, opener=opener, **sampling)
        backend = start_with_adapter(backend, spec.adapter)
        if spec.kind in MERGED_KINDS and merging_wanted():
            backend.merge_adapter()
        return backend

    @property
    def name(self) -> str:
        return self.spec.name

    # -- generation ----------------------------------------------------------------------------

    def complete(
        self,
        messages: list[ChatMessage],
        *,
        schema: dict | None = None,
        max_tokens: int = 256,
        temperature: float = 0.7,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        chat = [_as_dict(message) for message in messages]
        with self._lock:
            self._check_open()
            grammar = self._grammar(schema) if schema is not None else None
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled before generation started")
            started = time.perf_counter()
            cached_before = self._read_prompt(chat, cancel) if cancel is not None else None
            meter = EvalMeter(self.llm)
            pieces: list[str] = []
            finish_reason = ""
            with meter.installed():
                chunks = self._stream(chat, grammar, max_tokens, temperature)
                try:
                    for chunk in chunks:
                        choice = chunk["choices"][0]
                        piece = choice["delta"].get("content")
                        if piece:
                            pieces.append(piece)
                            if on_token is not None:
                                on_token(piece)
                        finish_reason = choice.get("finish_reason") or finish_reason
                        if cancel is not None and cancel.is_set():
                            break
                finally:
                    chunks.close()
            text = "".join(pieces)
            if cancel is not None and cancel.is_set() and not finish_reason:
                cancelled = Cancelled(f"cancelled after {meter.sampled_tokens} tokens")
                cancelled.partial_text = text  # type: ignore[attr-defined]
                raise cancelled
            # A "stop" means the last sampled token was end-of-generation, which is not output.
            completion_tokens = meter.sampled_tokens - (1 if finish_reason == "stop" else 0)
            return Completion(
                text=text,
                prompt_tokens=meter.prompt_tokens,
                cached_tokens=meter.cached_tokens if cached_before is None else cached_before,
                completion_tokens=max(completion_tokens, 0),
                latency_ms=(time.perf_counter() - started) * 1000,
                finish_reason=finish_reason,
            )

    def fill_choices(
        self,
        messages: list[ChatMessage],
        template: Sequence[str | Sequence[str]],
        *,
        guess: Sequence[str] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        """Answer with `template`: its strings as they are, each of its lists replaced by the
        allowed string the model finds likeliest, chosen token by token among the tokens that
        can still lead to an allowed string (greedy; no sampler, grammar or penalty). A blank
        costs one decode per token that is a real choice, so a fixed-shape answer such as a row
        of integers costs far less than generating it under a grammar; `guess`, a likely string
        per blank (the previous answer), is checked in the same decode, so every blank it gets
        right costs nothing more (the answer does not depend on it). The prompt reuses the KV
        cache's prefix as `complete` does (both build the same prompt tokens)."""
        chat = [_as_dict(message) for message in messages]
        with self._lock:
            self._check_open()
            started = time.perf_counter()
            try:
                prompt = chat_prompt_tokens(self.llm, chat)
                parts = [self._template_part(part) for part in template]
                self._check_room(len(prompt) + sum(_longest(part) for part in parts))
                filler = _BlankFiller(self.llm, prompt, parts, guess, cancel)
                text = filler.fill(self._end_token())
            except (BackendError, Cancelled):
                raise
            except (ValueError, RuntimeError, NativeError) as error:
                raise BackendError(f"{self.name}: llama.cpp failed: {error}") from error
            return Completion(
                text=text,
                prompt_tokens=len(prompt),
                cached_tokens=filler.cached_tokens,
                completion_tokens=filler.answer_tokens,
                latency_ms=(time.perf_counter() - started) * 1000,
                finish_reason="stop",
            )

    def read_ahead(self, messages: list[ChatMessage], *, cancel: threading.Event | None = None) -> Completion:
        """Read the prompt `messages` make into the KV cache, generating nothing, so that a later
        prompt that extends them reads only what is new. The prompt's last READ_AHEAD_HOLD_BACK
        tokens are left out: the chat template's end of message, and a last word that the next
        prompt may tokenize differently (a turn still being written)."""
        chat = [_as_dict(message) for message in messages]
        with self._lock:
            self._check_open()
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled before reading")
            started = time.perf_counter()
            try:
                prompt = chat_prompt_tokens(self.llm, chat)[:-READ_AHEAD_HOLD_BACK]
                self._check_room(len(prompt))
                cached = keep_cached_prefix(self.llm, prompt) if prompt else self.llm.n_tokens
                self._read_slices(prompt[cached:], cancel)
            except (BackendError, Cancelled):
                raise
            except (ValueError, RuntimeError, NativeError) as error:
                raise BackendError(f"{self.name}: llama.cpp failed: {error}") from error
            return Completion(
                text="",
                prompt_tokens=len(prompt),
                cached_tokens=cached,
                latency_ms=(time.perf_counter() - started) * 1000,
            )

    def _read_prompt(self, chat: list[dict], cancel: threading.Event) -> int | None:
        """Read the prompt of `chat` into the KV cache in slices, all but its last token (which
        generation reads again for its logits), so that generation finds it cached. The number of
        its tokens that were cached before; None when it does not fit the context (generation then
        says so)."""
        try:
            tokens = chat_prompt_tokens(self.llm, chat)
            if len(tokens) > self.llm.n_ctx():
                return None
            # Never the whole prompt: generation would then sample from the logits left by
            # whatever was decoded last.
            cached = self.llm.n_tokens = min(keep_cached_prefix(self.llm, tokens), len(tokens) - 1)
            self._read_slices(tokens[cached:-1], cancel)
        except Cancelled:
            raise
        except (ValueError, RuntimeError, NativeError) as error:
            raise BackendError(f"{self.name}: llama.cpp failed: {error}") from error
        return cached

    def _read_slices(self, tokens: list[int], cancel: threading.Event | None) -> None:
        for start in range(0, len(tokens), PROMPT_SLICE_TOKENS):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"cancelled after reading {start} of {len(tokens)} prompt tokens")
            self.llm.eval(tokens[start : start + PROMPT_SLICE_TOKENS])

    def prompt_state(self, messages: list[ChatMessage], max_tokens: int) -> np.ndarray:
        """The model's final hidden state after the last `max_tokens` tokens of the chat prompt
        `messages` make (for a score head). Read by a second context of the same weights, opened
        on first use in embedding mode, so the KV cache of this one is left as it was."""
        chat = [_as_dict(message) for message in messages]
        with self._lock:
            self._check_open()
            if self._lora is not None:
                raise BackendError(f"{self.name}: hidden states need the adapter merged, not applied at run time")
            tokens = chat_prompt_tokens(self.llm, chat)[-max_tokens:]
            try:
                reader = self._state_reader(max_tokens)
                state = reader.embed(self.llm.detokenize(tokens).decode("utf-8", errors="replace"), truncate=True)
            except (ValueError, RuntimeError) as error:
                raise BackendError(f"{self.name}: llama.cpp failed: {error}") from error
            return np.asarray(state, dtype=np.float64).ravel()

    def _state_reader(self, max_tokens: int) -> Llama:
        if self._state_llm is None:
            if self._opener is None:
                raise BackendError(f"{self.name}: hidden states need a model this backend opened itself")
            context = max_tokens + 64  # the detokenized text may come back a few tokens longer
            self._state_llm = self._opener.open(
                Path(self.llm.model_path),  # the base, or the merged copy now loaded
                embedding=True,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST,
                n_ctx=context,
                n_batch=context,
                n_ubatch=context,
            )
        return self._state_llm

    def _template_part(self, part: str | Sequence[str]) -> list[int] | _Choices:
        if isinstance(part, str):
            return self._tokens(part)
        if not part:
            raise BackendError(f"{self.name}: a blank with no allowed string")
        return _Choices({text: self._tokens(text) for text in part})

    def _tokens(self, text: str) -> list[int]:
        """`text`'s tokens as they continue an answer: tokenized after a newline that is then
        dropped, since a SentencePiece vocabulary would otherwise start the text with a space."""
        anchor = self.llm.tokenize(b"\n", add_bos=False, special=False)
        tokens = self.llm.tokenize(b"\n" + text.encode("utf-8"), add_bos=False, special=False)
        if tokens[: len(anchor)] == anchor and len(tokens) > len(anchor):
            return tokens[len(anchor) :]
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def _end_token(self) -> int:
        return self.llm.token_eos()

    def _check_room(self, tokens: int) -> None:
        if tokens > self.llm.n_ctx():
            raise BackendError(
                f"{self.name}: the prompt and answer need {tokens} tokens, more than the "
                f"context window of {self.llm.n_ctx()}"
            )

    def _stream(self, chat: list[dict], grammar: LlamaGrammar | None, max_tokens: int, temperature: float):
        """llama-cpp-python's chunk stream, with its own failures turned into BackendError
        (errors raised by the caller's on_token are left alone)."""
        options: dict[str, Any] = {
            "messages": chat,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "grammar": grammar,
            "stream": True,
            "seed": self._seeds.randrange(2**31),
            **self._sampling,
        }
        try:
            # With stream=True the answer is a generator of chunks (annotated as either mode's).
            chunks = cast(
                Generator[CreateChatCompletionStreamResponse, None, None],
                self.llm.create_chat_completion(**options),
            )
        except (ValueError, RuntimeError) as error:
            raise BackendError(f"{self.name}: llama.cpp failed: {error}") from error
        try:
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                except (ValueError, RuntimeError) as error:
                    raise BackendError(f"{self.name}: llama.cpp failed: {error}") from error
                yield chunk
        finally:
            chunks.close()

    def _grammar(self, schema: dict) -> LlamaGrammar:
        try:
            text = grammar_for_schema(schema)
        except SchemaError as error:
            raise BackendError(f"{self.name}: {error}") from error
        grammar = self._grammars.get(text)
        if grammar is None:
            problem = grammar_is_valid(self.llm, text)
            if problem:
                raise BackendError(f"{self.name}: the grammar built from the JSON schema is invalid: {problem}")
            grammar = self._grammars[text] = LlamaGrammar.from_string(text, verbose=False)
        return grammar

    # -- adapters ------------------------------------------------------------------------------

    @property
    def adapter_path(self) -> Path | None:
        if self._lora is not None:
            return self._lora.path
        return self._merged

    @property
    def adapter(self) -> Path | None:
        """The GGUF LoRA file in use, or None when the base model answers."""
        return self.adapter_path

    @property
    def adapter_merged(self) -> bool:
        """Whether the adapter in use is folded into the loaded weights (not applied at run time)."""
        return self._merged is not None

    def set_adapter(self, path: str | Path | None, scale: float = 1.0) -> None:
        """Switch the running model to a GGUF LoRA adapter (None: back to the base model).

        The KV cache is dropped afterwards: it was computed with the old weights, so the next
        call re-evaluates its whole prompt once. A bad file raises BackendError and leaves the
        previous adapter active. A call in progress finishes first (the lock), so a swap never
        lands mid-generation. `name` names the path as given. The adapter is applied at run
        time; when the loaded weights have one merged in, the bare base is opened again first.
        """
        with self._lock:
            self._check_open()
            if not self._owns_llama:
                raise BackendError(
                    f"{self.name}: this backend shares its llama.cpp model with another backend, "
                    "and an adapter would change both; give it its own model to swap adapters"
                )
            if path is None and self.adapter_path is None:
                return
            llm = self._open_again() if self._merged is not None else self.llm
            try:
                new = None if path is None else self._load_adapter(llm, Path(path).expanduser(), scale)
            except BackendError:
                if llm is not self.llm:
                    llm.close()
                raise
            if path is None and llm is self.llm:
                clear_adapters(llm)
            self.llm.reset()
            old = self._lora
            self._use_llama(llm)
            self._lora, self._merged, self.adapter_scale = new, None, scale if new else 1.0
            self.spec = self.spec.with_adapter(path)
            if old is not None:
                old.free()

    def merge_adapter(self) -> bool:
        """Fold the adapter applied at run time into a merged copy of the weights (cached on
        disk, made on first use) and load that copy instead: the same model to within rounding
        (held-out NLL 2.319 merged, 2.321 at run time), at the base's speed.
        False, with everything as it was, when there is nothing to merge or it cannot be done
        (a model opened by the caller, a base or adapter gguf-py cannot read, a full disk)."""
        with self._lock:
            self._check_open()
            if self._lora is None or self._opener is None:
                return False
            try:
                path = merged_model_path(self._opener.path, self._lora.path, self.adapter_scale, MERGED_WEIGHT_TYPE)
                llm = self._opener.open(path)
            except (BackendError, OSError, ValueError, SotopiaError) as error:
                logger.warning("%s: running the adapter unmerged: %s", self.name, error)
                return False
            clear_adapters(self.llm)
            self._lora.free()
            self._merged, self._lora = self._lora.path, None
            self._use_llama(llm)
            return True

    def _open_again(self) -> Llama:
        """The bare base model, opened again (to leave merged weights)."""
        if self._opener is None:
            raise BackendError(f"{self.name}: cannot open the base model again")
        return self._opener.open()

    def _use_llama(self, llm: Llama) -> None:
        """Run on `llm` from now on (the caller holds the lock); the previous one is closed."""
        if llm is not self.llm:
            previous, self.llm = self.llm, llm
            previous.close()
            self._close_state_reader()

    def _close_state_reader(self) -> None:
        if self._state_llm is not None:
            self._state_llm.close()
            self._state_llm = None

    def _load_adapter(self, llm: Llama, path: Path, scale: float) -> LoraHandle:
        """llama.cpp checks the file itself (magic, truncation, architecture, shapes) and refuses
        it cleanly; only then is the file read again here, to explain common mistakes plainly.
        (Reading it with the gguf package first would triple the cost of a swap.)"""
        if not path.is_file():
            raise BackendError(f"LoRA adapter not found: {path}")
        new = None
        try:
            new = LoraHandle.load(llm, path)
            new.activate(scale)
        except NativeError as error:
            if new is not None:
                self._restore_previous(llm, new)
            _check_adapter_file(path, llm, str(error))
            raise BackendError(str(error)) from None
        return new

    def _restore_previous(self, llm: Llama, failed: LoraHandle) -> None:
        if self._lora is not None and llm is self.llm:
            self._lora.activate(self.adapter_scale)
        else:
            clear_adapters(llm)
        failed.free()

    # -- lifecycle -----------------------------------------------------------------------------

    def reset_cache(self) -> None:
        """Forget the KV cache (the next call re-evaluates its prompt)."""
        with self._lock:
            self.llm.reset()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._lora is not None:
                clear_adapters(self.llm)
                self.llm.reset()
                self._lora.free()
                self._lora = None
            self._close_state_reader()
            if self._owns_llama:
                self.llm.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"{self.name}: backend is closed")

    def __enter__(self) -> LlamaCppBackend:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _Choices:
    """A blank's allowed strings as a tree of their tokens."""

    def __init__(self, tokens_by_text: dict[str, list[int]]) -> None:
        self.children: dict[int, _Choices] = {}
        self.text: str | None = None  # set where an allowed string ends
        self._tokens = tokens_by_text
        for text, tokens in tokens_by_text.items():
            node = self
            for token in tokens:
                node = node.children.setdefault(token, _Choices({}))
            node.text = text

    def tokens_of(self, text: str) -> list[int] | None:
        """The tokens of one of the allowed strings (None for any other string)."""
        return self._tokens.get(text)

    def longest(self) -> int:
        return max((1 + child.longest() for child in self.children.values()), default=0)


def _longest(part: list[int] | _Choices) -> int:
    return part.longest() if isinstance(part, _Choices) else len(part)


class _BlankFiller:
    """One `fill_choices` answer. Tokens wait in `pending` until a choice needs the logits after
    them, and are then read in one decode (the prompt's first, behind its cached prefix).

    With a guess (a likely string per blank), that decode also reads the rest of the answer as
    guessed and keeps the logits after each of its tokens (`checked`): each token the answer
    then agrees on costs nothing more, and the first it does not agree on drops the rest from
    the KV cache; from then on the guess is read one blank ahead, and after a second miss no
    more. The answer is the same with or without a guess, right or wrong."""

    def __init__(
        self,
        llm: Llama,
        prompt: list[int],
        parts: list[list[int] | _Choices],
        guess: Sequence[str] | None,
        cancel: threading.Event | None,
    ) -> None:
        self.llm = llm
        self.parts = parts
        self.cancel = cancel
        self.pending = list(prompt)
        self.prompt_read = False
        self.cached_tokens = 0
        self.answer_tokens = 0
        self.logits: np.ndarray | None = None  # after the last token of the answer so far
        self.checked: deque[tuple[int, np.ndarray]] = deque()
        self.guessed = self._guessed_tokens(guess) if guess else None
        self.lookahead = len(parts)  # blanks to guess ahead: all, until the guess misses once

    def fill(self, end_token: int) -> str:
        texts = []
        for position, part in enumerate(self.parts):
            if isinstance(part, _Choices):
                after = self.parts[position + 1] if position + 1 < len(self.parts) else None
                # An allowed string that is the start of another ("1" and "10") ends where the
                # model prefers the text that follows (or the end of its answer) to going on.
                ending = after[0] if isinstance(after, list) and after else end_token
                texts.append(self._choose(part, ending, position))
            else:
                for token in part:
                    self._append(token)
                texts.append(self.llm.detokenize(part).decode("utf-8", errors="replace"))
        return "".join(texts)

    def _guessed_tokens(self, guess: Sequence[str]) -> dict[int, list[int]]:
        """Each blank's guessed tokens, by the blank's position (up to the first guess that is
        not one of its blank's allowed strings)."""
        blanks = [position for position, part in enumerate(self.parts) if isinstance(part, _Choices)]
        guessed: dict[int, list[int]] = {}
        for position, text in zip(blanks, guess):
            tokens = self.parts[position].tokens_of(text)  # type: ignore[union-attr]
            if tokens is None:
                break
            guessed[position] = tokens
        return guessed

    def _continuation(self, position: int) -> list[int]:
        """The answer from the blank at `position` on, as guessed, for at most `lookahead`
        blanks (and the text after the last of them)."""
        if self.guessed is None:
            return []
        tokens: list[int] = []
        blanks = 0
        for at, part in enumerate(self.parts[position:], start=position):
            if isinstance(part, _Choices):
                guessed = self.guessed.get(at) if blanks < self.lookahead else None
                if guessed is None:
                    break
                tokens += guessed
                blanks += 1
            else:
                tokens += part
        return tokens

    def _append(self, token: int) -> None:
        self.answer_tokens += 1
        if self.checked:
            read, logits = self.checked.popleft()
            if read == token:
                self.logits = logits
                return
            self.llm.n_tokens -= len(self.checked) + 1  # the guess went wrong here
            self.checked.clear()
            # Scores that moved once in an answer may move again: after a miss the guess is read
            # one blank ahead, after a second not at all, so a guess wrong throughout wastes
            # little more than its first reading.
            self.lookahead = 1 if self.lookahead == len(self.parts) else 0
        self.pending.append(token)
        self.logits = None

    def _choose(self, node: _Choices, ending: int, position: int) -> str:
        at_start = True
        while True:
            options = list(node.children)
            if node.text is not None:
                if not options:
                    return node.text
                options.append(ending)
            if len(options) == 1:
                token = options[0]
            else:
                logits = self._logits(self._continuation(position) if at_start else [])
                token = max(options, key=lambda option: logits[option])
            if token not in node.children:
                return node.text  # type: ignore[return-value]  # the ending won
            self._append(token)
            node = node.children[token]
            at_start = False

    def _logits(self, guessed: list[int]) -> np.ndarray:
        """The logits after the answer so far: known, or read now (with `guessed`, the rest of
        the answer as guessed from here, whose logits are kept for `_append` to check)."""
        if self.logits is not None:
            return self.logits
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"cancelled after {self.answer_tokens} tokens")
        if not self.prompt_read:
            self.cached_tokens = min(keep_cached_prefix(self.llm, self.pending), len(self.pending) - 1)
            self.llm.n_tokens = self.cached_tokens
            self.pending = self.pending[self.cached_tokens :]
            self.prompt_read = True
        rows = logits_along(self.llm, self.pending + guessed, len(self.pending) - 1)
        self.pending = []
        self.checked = deque(zip(guessed, rows[1:]))
        return rows[0]


def _as_dict(message: ChatMessage | dict) -> dict:
    if isinstance(message, dict):
        return {"role": message["role"], "content": message["content"]}
    return {"role": message.role, "content": message.content}


def _check_adapter_file(path: Path, llm: Llama, refusal: str) -> None:
    """Raise a plain explanation of why llama.cpp refused the file, when it is a common mistake."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception:  # gguf raises ValueError, struct.error, IndexError... on junk
        raise BackendError(f"{path} is not a GGUF file, or it is damaged ({refusal})") from None
    fields = {key: _field_text(reader, key) for key in ("general.type", "general.architecture", "adapter.type")}
    if fields["general.type"] != "adapter" or fields["adapter.type"] != "lora":
        raise BackendError(
            f"{path} is not a GGUF LoRA adapter (general.type={fields['general.type']!r}, "
            f"adapter.type={fields['adapter.type']!r})"
        )
    model_arch = llm.metadata.get("general.architecture")
    if model_arch and fields["general.architecture"] != model_arch:
        raise BackendError(
            f"{path} is an adapter for {fields['general.architecture']!r} models, "
            f"but the running model is {model_arch!r}"
        )


def _field_text(reader, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None:
        return None
    try:
        return field.contents()
    except Exception:
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
