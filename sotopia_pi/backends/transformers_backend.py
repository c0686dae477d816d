"""The transformers backend: a local Hugging Face model, or a GGUF dequantized by transformers,
optionally with a PEFT adapter that can be swapped between turns.

    hf:PATH                  a model directory (config.json, weights, tokenizer with a chat template)
    hf:DIR#gguf=FILE         DIR/FILE loaded through transformers' GGUF support and dequantized;
                             the result is cached under <home>/hf-cache/ so later loads are fast
    ...+adapter=ADAPTER_DIR  a PEFT adapter directory on top of either

This is the only module that imports torch and transformers (peft only once an adapter is used);
`create_backend` imports it lazily because those imports take seconds.

transformers has no grammar-constrained decoding here, so `schema=` only adds the schema to the
prompt; callers parse and repair the text as they do for any backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)
from transformers.utils import logging as hf_logging

from .. import paths
from ..episode import ChatMessage
from .base import BackendError, Cancelled, Completion, ModelSpec, TokenCallback

CACHE_DIR_NAME = "hf-cache"
CACHE_SOURCE_FILE = "source.json"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DECODE_OPTIONS = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}


class TransformersBackend:
    """One model (plus at most one active adapter) behind the ChatBackend and AdapterSwapping
    protocols.

    Calls are serialised by a lock, so `set_adapter` from another thread waits for the turn in
    progress and takes effect at the next one.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        spec: ModelSpec,
        source_dir: Path,
        from_cache: bool = False,
        top_p: float = 1.0,
    ) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise BackendError(f"{spec.name}: the tokenizer in {source_dir} has no chat template")
        self.model = model
        self.tokenizer = tokenizer
        self.source_dir = source_dir
        self.from_cache = from_cache
        self.top_p = top_p
        self._spec = spec.with_adapter(None)
        self._adapter: Path | None = None
        self._adapter_names = (f"adapter{n}" for n in itertools.count(1))
        self._lock = threading.Lock()
        self._stop_ids = _stop_token_ids(model, tokenizer)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._stop_ids[0]

    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec,
        *,
        device: str | None = None,
        dtype: str = "float32",
        threads: int | None = None,
        top_p: float = 1.0,
    ) -> TransformersBackend:
        """Load `hf:PATH` or `hf:DIR#gguf=FILE` (and its `+adapter=DIR`, if any).

        device: "cuda", "cpu", ... (default: CUDA when available, else CPU).
        dtype: float32, bfloat16 or float16. threads: torch CPU threads (process-wide).
        """
        if spec.kind != "hf":
            raise BackendError(f"{spec.name}: the transformers backend only runs hf: models")
        if dtype not in _DTYPES:
            raise BackendError(f"{spec.name}: dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")
        if threads is not None:
            torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = _DTYPES[dtype]
        if spec.gguf_file:
            model, tokenizer, source_dir, from_cache = _load_gguf(spec, torch_dtype)
        else:
            source_dir = _model_directory(spec)
            model, tokenizer = _load_directory(spec, source_dir, torch_dtype)
            from_cache = False
        try:
            model = model.to(device).eval()
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"{spec.name}: cannot move the model to {device!r}: {exc}") from exc
        backend = cls(model, tokenizer, spec=spec, source_dir=source_dir, from_cache=from_cache, top_p=top_p)
        if spec.adapter:
            backend.set_adapter(spec.adapter)
        return backend

    @property
    def spec(self) -> ModelSpec:
        """The model this backend runs now, its active adapter included."""
        return self._spec.with_adapter(self._adapter)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def adapter(self) -> Path | None:
        """The directory of the active adapter, or None when the base model answers."""
        return self._adapter

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

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
        with self._lock:
            if self.model is None:
                raise BackendError(f"{self.name}: the backend is closed")
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled before generation started")
            started = time.perf_counter()
            inputs = self._encode(messages, schema)
            prompt_tokens = inputs["input_ids"].shape[1]
            stop_now = threading.Event()
            options = self._generate_options(inputs, max_tokens, temperature, [cancel, stop_now])
            if on_token is None:
                output = self._generate(options)
            else:
                output = self._generate_streaming(options, on_token, stop_now)
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled during generation")
            generated = output[0, prompt_tokens:].tolist()
            return Completion(
                text=self.tokenizer.decode(generated, **_DECODE_OPTIONS),
                prompt_tokens=prompt_tokens,
                completion_tokens=len(generated),
                latency_ms=(time.perf_counter() - started) * 1000,
                finish_reason="stop" if generated and generated[-1] in self._stop_ids else "length",
            )

    def set_adapter(self, path: str | Path | None) -> None:
        """Answer with the PEFT adapter in `path` from the next turn on, or with the base model
        when `path` is None. A path is always read afresh, so retraining into the same folder
        and calling this again picks up the new weights. On failure the current state is kept."""
        with self._lock:
            if self.model is None:
                raise BackendError(f"{self.name}: the backend is closed")
            if path is None:
                self._drop_adapters()
                return
            adapter_dir = Path(path).expanduser()
            _check_adapter_dir(adapter_dir)
            if self._adapter is None:
                self._attach_first_adapter(adapter_dir)
            else:
                self._replace_adapter(adapter_dir)
            self._adapter = adapter_dir

    def close(self) -> None:
        with self._lock:
            self.model = None
            self._adapter = None

    # -- generation -------------------------------------------------------------------------

    def _encode(self, messages: list[ChatMessage], schema: dict | None) -> dict:
        turns = [{"role": m.role, "content": m.content} for m in messages]
        if schema is not None:
            turns = _with_schema_instruction(turns, schema)
        try:
            prompt = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja raises its own exception types for template errors
            raise BackendError(f"{self.name}: the chat template failed on these messages: {exc}") from exc
        encoded = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        return {key: value.to(self.device) for key, value in encoded.items()}

    def _generate_options(self, inputs: dict, max_tokens: int, temperature: float, stop_events) -> dict:
        options = dict(
            inputs,
            max_new_tokens=max_tokens,
            eos_token_id=self._stop_ids,
            pad_token_id=self._pad_id,
            stopping_criteria=StoppingCriteriaList([_StopWhenSet(stop_events)]),
        )
        if temperature > 0:
            options.update(do_sample=True, temperature=temperature, top_p=self.top_p)
        else:
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return options

    def _generate(self, options: dict) -> torch.Tensor:
        try:
            return self.model.generate(**options)
        except Exception as exc:
            raise BackendError(f"{self.name}: generation failed: {exc}") from exc

    def _generate_streaming(self, options: dict, on_token: TokenCallback, stop_now: threading.Event) -> torch.Tensor:
        streamer = _TokenStreamer(self.tokenizer, skip_prompt=True, **_DECODE_OPTIONS)
        result: dict = {}

        def work() -> None:
            try:
                result["output"] = self.model.generate(**options, streamer=streamer)
            except BaseException as exc:
                result["error"] = exc
                streamer.end()  # wake the reader below, which would otherwise wait forever

        worker = threading.Thread(target=work, name="hf-generate", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    on_token(piece)
        except BaseException:
            stop_now.set()  # the callback failed: stop generating, then let its error through
            raise
        finally:
            worker.join()
        if "error" in result:
            raise BackendError(f"{self.name}: generation failed: {result['error']}") from result["error"]
        return result["output"]

    # -- adapters ---------------------------------------------------------------------------

    def _attach_first_adapter(self, adapter_dir: Path) -> None:
        from peft import PeftConfig, get_peft_model

        config = _read_adapter_config(adapter_dir, PeftConfig)
        config.inference_mode = True
        name = next(self._adapter_names)
        with warnings.catch_warnings():
            # The adapter usually records a different base path (e.g. the GGUF cache); that is fine.
            warnings.filterwarnings("ignore", message=".*base_model_name_or_path.*")
            try:
                peft_model = get_peft_model(self.model, config, adapter_name=name)
            except Exception as exc:
                raise BackendError(f"adapter {adapter_dir} does not fit {self._spec.name}: {exc}") from exc
        try:
            _load_adapter_weights(peft_model, adapter_dir, name)
        except BackendError:
            self.model = peft_model.unload().eval()
            raise
        self.model = peft_model.eval()

    def _replace_adapter(self, adapter_dir: Path) -> None:
        previous = self.model.active_adapter
        name = next(self._adapter_names)
        try:
            _load_adapter_weights(self.model, adapter_dir, name)
        except BackendError:
            if name in self.model.peft_config:
                self.model.delete_adapter(name)
            self.model.set_adapter(previous)
            raise
        self.model.set_adapter(name)
        self.model.delete_adapter(previous)
        self.model.eval()

    def _drop_adapters(self) -> None:
        if self._adapter is not None:
            # unload() puts the original layers back: the base model again, bit for bit.
            self.model = self.model.unload().eval()
            self._adapter = None


class _TokenStreamer(TextIteratorStreamer):
    """Hands out text after every token; TextIteratorStreamer itself waits for whole words.

    The whole generation is decoded again at each token (a few hundred tokens at most), so the
    pieces always add up to the final decoded text. Only a trailing partial UTF-8 character is
    held back: it decodes as U+FFFD until its last byte arrives.
    """

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1:
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.token_cache.extend(value.tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        assert isinstance(text, str)  # one sequence of ids decodes to one string
        settled = len(text.rstrip("\ufffd"))
        if settled > self.print_len:
            self.on_finalized_text(text[self.print_len : settled])
            self.print_len = settled


class _StopWhenSet(StoppingCriteria):
    """Stops generation after the current token once any of the events is set."""

    def __init__(self, events) -> None:
        self.events = [event for event in events if event is not None]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.BoolTensor:
        stop = any(event.is_set() for event in self.events)
        # A bool tensor, which torch's annotations can only call a Tensor.
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


def _with_schema_instruction(turns: list[dict], schema: dict) -> list[dict]:
    instruction = (
        "Reply with one JSON object and nothing else. It must match this JSON schema:\n"
        + json.dumps(schema, ensure_ascii=False)
    )
    turns = [dict(turn) for turn in turns]
    if turns and turns[-1]["role"] in {"user", "system"}:
        turns[-1]["content"] = f"{turns[-1]['content']}\n\n{instruction}"
    else:
        turns.append({"role": "user", "content": instruction})
    return turns


def _stop_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a turn: the generation config's eos, the tokenizer's, and ChatML's end."""
    candidates: list[int | None] = []
    configured = model.generation_config.eos_token_id
    candidates += configured if isinstance(configured, list) else [configured]
    candidates.append(tokenizer.eos_token_id)
    turn_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if turn_end != tokenizer.unk_token_id:
        candidates.append(turn_end)
    ids = list(dict.fromkeys(i for i in candidates if isinstance(i, int)))
    if not ids:
        raise BackendError("the model defines no end-of-sequence token")
    return ids


# -- loading ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Loading bars would scribble over the TUI; turn them off while we load."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _model_directory(spec: ModelSpec) -> Path:
    directory = Path(spec.target).expanduser()
    if not directory.is_dir():
        raise BackendError(f"{spec.name}: {directory} is not a directory")
    if not (directory / "config.json").is_file():
        raise BackendError(f"{spec.name}: {directory} has no config.json, so it is not a Hugging Face model directory")
    return directory


def _load_directory(spec: ModelSpec, directory: Path, dtype: torch.dtype):
    try:
        with _quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise BackendError(f"{spec.name}: cannot load the model in {directory}: {exc}") from exc
    return model, tokenizer


def _load_gguf(spec: ModelSpec, dtype: torch.dtype):
    """Returns (model, tokenizer, directory it came from, whether that was the cache)."""
    assert spec.gguf_file is not None  # only a spec that names its GGUF file is loaded from one
    gguf_path = (Path(spec.target).expanduser() / spec.gguf_file).resolve()
    if not gguf_path.is_file():
        raise BackendError(f"{spec.name}: GGUF file {gguf_path} not found")
    cache_dir = gguf_cache_dir(gguf_path, dtype)
    if cache_dir.is_dir():
        try:
            model, tokenizer = _load_directory(spec, cache_dir, dtype)
            return model, tokenizer, cache_dir, True
        except BackendError:
            shutil.rmtree(cache_dir, ignore_errors=True)  # damaged; it is only a copy, so rebuild it
    try:
        with _quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise BackendError(f"{spec.name}: transformers cannot load {gguf_path}: {exc}") from exc
    _save_dequantized(model, tokenizer, gguf_path, cache_dir)
    return model, tokenizer, cache_dir, False


def gguf_cache_dir(gguf_path: Path, dtype: torch.dtype) -> Path:
    """Where the dequantized copy of a GGUF lives. The key changes when the file does."""
    stat = gguf_path.stat()
    key = f"{gguf_path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{dtype}"
    return paths.home() / CACHE_DIR_NAME / hashlib.sha256(key.encode()).hexdigest()[:16]


def _save_dequantized(model, tokenizer, gguf_path: Path, cache_dir: Path) -> None:
    # A model loaded from GGUF refuses save_pretrained while it still counts as quantized,
    # although its weights are plain tensors by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache_dir.parent))
    try:
        with _quiet_loading():
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        source = {"gguf": str(gguf_path), "size": gguf_path.stat().st_size}
        (staging / CACHE_SOURCE_FILE).write_text(json.dumps(source, indent=2))
        os.replace(staging, cache_dir)  # atomic: a half-written cache is never picked up
    except OSError:
        # Another process finished the same cache first, or the disk is full: either way the
        # model in memory is fine, so use it and leave the cache to a later load.
        shutil.rmtree(staging, ignore_errors=True)


def _check_adapter_dir(adapter_dir: Path) -> None:
    if not adapter_dir.is_dir():
        raise BackendError(f"adapter {adapter_dir}: no such directory")
    if not (adapter_dir / "adapter_config.json").is_file():
        raise BackendError(f"adapter {adapter_dir}: adapter_config.json is missing, so it is not a PEFT adapter")
    weights = [adapter_dir / "adapter_model.safetensors", adapter_dir / "adapter_model.bin"]
    if not any(path.is_file() for path in weights):
        raise BackendError(f"adapter {adapter_dir}: adapter_model.safetensors is missing")


def _read_adapter_config(adapter_dir: Path, config_class):
    try:
        return config_class.from_pretrained(adapter_dir)
    except Exception as exc:  # peft raises ValueError, TypeError or json errors for bad configs
        raise BackendError(f"adapter {adapter_dir}/adapter_config.json is not a valid PEFT config: {exc}") from exc


def _load_adapter_weights(peft_model, adapter_dir: Path, name: str) -> None:
    """Load an adapter's weights under `name`; every LoRA tensor must be present in the file."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*base_model_name_or_path.*")
            result = peft_model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
    except Exception as exc:  # safetensors, json, shape mismatches: all mean a bad adapter
        raise BackendError(f"adapter {adapter_dir} cannot be loaded: {exc}") from exc
    missing = [key for key in result.missing_keys if f".{name}." in key or key.endswith(f".{name}")]
    if missing:
        raise BackendError(
            f"adapter {adapter_dir} does not match the model: {len(missing)} adapter tensors are "
            f"missing from its weights, e.g. {missing[0]}"
        )
