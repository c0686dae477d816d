"""The OpenAI-compatible backend: OpenAI itself, vLLM, llama.cpp servers, Ollama...

Structured output is negotiated once per backend and remembered. The first schema request asks
for `json_schema` (OpenAI, vLLM). A server that rejects it (HTTP 400/422) is asked next for
`json_object` with the schema attached (llama.cpp servers enforce that as a grammar), and
last for plain text with the schema spelled out in the system prompt. Either way the backend
returns text; the caller parses and repairs it.

The API key comes from the `api_key` option, SOTOPIA_PI_API_KEY or OPENAI_API_KEY; it is kept
in memory only. Servers on other hosts than api.openai.com may run without a key.

Adapters: a vLLM server started with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True
loads PEFT adapters at runtime (POST /v1/load_lora_adapter, /v1/unload_lora_adapter). There,
`set_adapter(path)` (or `openai:MODEL@URL+adapter=PATH`) loads the adapter directory (a path on
the server's machine) under a lora_name of this backend's own, and later requests ask for that
name as their model; `set_adapter(None)` asks for the base model again. The adapter this backend
loaded before is unloaded after a successful swap and on close. A server without the endpoints
gets a BackendError naming the missing one, and the backend keeps its model.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai

from ..episode import ChatMessage
from ..errors import SotopiaError
from ..redaction import register_secret
from .base import BackendError, Cancelled, Completion, ModelSpec, TokenCallback, start_with_adapter
from .schema import SchemaError, prepare_schema, schema_instruction

OPENAI_URL = "https://api.openai.com/v1"
API_KEY_ENVS = ("SOTOPIA_PI_API_KEY", "OPENAI_API_KEY")
NO_KEY = "none"

# Structured-output modes, strongest first.
JSON_SCHEMA = "json_schema"
JSON_OBJECT = "json_object"
INSTRUCTION = "instruction"
_MODES = (JSON_SCHEMA, JSON_OBJECT, INSTRUCTION)

# vLLM's runtime LoRA endpoints, relative to the /v1 base URL.
LOAD_LORA = "load_lora_adapter"
UNLOAD_LORA = "unload_lora_adapter"


def api_key_from_env() -> str | None:
    for variable in API_KEY_ENVS:
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    return None


class OpenAIBackend:
    """ChatBackend for any server that speaks the OpenAI chat-completions API; AdapterSwapping
    where the server has vLLM's runtime LoRA endpoints."""

    def __init__(
        self,
        spec: ModelSpec,
        base_url: str,
        *,
        api_key: str,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        max_retries: int = 2,
        seed: int | None = None,
        top_p: float | None = None,
        token_timeout: float | None = None,
    ) -> None:
        """Timeouts, each meant as written and named in the error when it expires:
        `connect_timeout` to connect, `timeout` for the first token (the whole answer when not
        streaming), `token_timeout` between two tokens of a streamed answer (default: `timeout`
        capped at 60 s). Timeouts are never retried; refused connections and HTTP 429/5xx are,
        `max_retries` times."""
        self.spec = spec.with_adapter(None)  # the adapter is added once the server has loaded it
        self.model = spec.target  # what requests ask for: the base model or a loaded lora_name
        self._lora_name: str | None = None
        self._lora_names = (f"sotopia-pi-{secrets.token_hex(3)}-{n}" for n in itertools.count(1))
        self._swap = _SwapGate()
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.token_timeout = token_timeout or min(timeout, 60.0)
        self.max_retries = max_retries
        self.seed = seed
        self.top_p = top_p
        self.structured_mode = JSON_SCHEMA
        self._mode_lock = threading.Lock()
        if api_key != NO_KEY:
            register_secret(api_key)  # redacted from every error text from now on
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key,
            timeout=openai.Timeout(timeout, connect=connect_timeout),
            max_retries=max_retries,
        )
        self._chat_client = self._client.with_options(max_retries=0)  # _send retries what is worth it

    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        max_retries: int = 2,
        seed: int | None = None,
        top_p: float | None = None,
        token_timeout: float | None = None,
    ) -> OpenAIBackend:
        if spec.kind != "openai":
            raise BackendError(f"{spec.name} is not an OpenAI-compatible model name (openai:MODEL@URL)")
        url = spec.url or OPENAI_URL
        key = api_key or api_key_from_env()
        if not key:
            if url.rstrip("/") == OPENAI_URL:
                raise BackendError(f"{spec.name} needs an API key: set SOTOPIA_PI_API_KEY or OPENAI_API_KEY")
            key = NO_KEY
        backend = cls(
            spec,
            url,
            api_key=key,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            seed=seed,
            top_p=top_p,
            token_timeout=token_timeout,
        )
        return start_with_adapter(backend, spec.adapter)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def adapter(self) -> str | None:
        """The adapter path (on the server) that requests use now, or None for the base model."""
        return self.spec.adapter

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
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled before the request was sent")
        with self._swap.call():
            return self._complete(messages, schema, max_tokens, temperature, on_token, cancel)

    def _complete(
        self,
        messages: list[ChatMessage],
        schema: dict | None,
        max_tokens: int,
        temperature: float,
        on_token: TokenCallback | None,
        cancel: threading.Event | None,
    ) -> Completion:
        chat = [_as_dict(message) for message in messages]
        request: dict = {"model": self.model, "max_tokens": max_tokens, "temperature": temperature}
        if self.seed is not None:
            request["seed"] = self.seed
        if self.top_p is not None:
            request["top_p"] = self.top_p
        streaming = on_token is not None or cancel is not None
        if schema is None:
            return self._send({**request, "messages": chat}, streaming, on_token, cancel)
        try:
            prepared = prepare_schema(schema)
        except SchemaError as error:
            raise BackendError(f"{self.name}: {error}") from error
        modes = _MODES[_MODES.index(self.structured_mode) :]
        for mode in modes:
            attempt = {**request, **_structured_request(mode, chat, prepared)}
            try:
                result = self._send(attempt, streaming, on_token, cancel)
            except _FormatRejected as rejected:
                if mode == modes[-1]:
                    raise BackendError(str(rejected)) from None
                continue
            with self._mode_lock:
                self.structured_mode = mode
            return result
        raise AssertionError("unreachable")

    # -- one request ---------------------------------------------------------------------------

    def _send(
        self,
        request: dict,
        streaming: bool,
        on_token: TokenCallback | None,
        cancel: threading.Event | None,
    ) -> Completion:
        """One request; refused connections and HTTP 429/5xx are tried again (timeouts not:
        a timeout means what it says). An empty answer is an error, not an empty turn."""
        for attempt in range(self.max_retries + 1):
            try:
                completion = self._send_once(request, streaming, on_token, cancel)
            except _Retryable as retry:
                if attempt >= self.max_retries or (cancel is not None and cancel.is_set()):
                    raise retry.error from None
                time.sleep(min(4.0, 0.5 * 2**attempt))
                continue
            if not completion.text.strip():
                raise BackendError(
                    f"{self.base_url} sent an empty answer ({self.name}, finish reason "
                    f"{completion.finish_reason or 'none'!r})"
                )
            return completion
        raise AssertionError("unreachable")

    def _send_once(
        self,
        request: dict,
        streaming: bool,
        on_token: TokenCallback | None,
        cancel: threading.Event | None,
    ) -> Completion:
        started = time.perf_counter()
        try:
            if streaming:
                completion = self._stream(request, on_token, cancel)
            else:
                completion = self._whole(request)
        except _CallerError as error:
            raise error.original from None  # the caller's own on_token failed: not ours to rename
        except openai.APITimeoutError as error:
            if _is_httpx_error(error.__cause__, "ConnectTimeout"):
                raise BackendError(
                    f"cannot connect to {self.base_url} within {self.connect_timeout:g} s ({self.name})"
                ) from None
            raise BackendError(f"{self.base_url} did not answer within {self.timeout:g} s ({self.name})") from None
        except openai.APIConnectionError as error:
            cause = error.__cause__ or error
            raise _Retryable(BackendError(f"cannot reach {self.base_url} ({self.name}): {cause}")) from None
        except openai.AuthenticationError as error:
            raise BackendError(
                f"{self._status_message(error)}; set SOTOPIA_PI_API_KEY or OPENAI_API_KEY"
            ) from None
        except openai.APIStatusError as error:
            if "response_format" in request and _rejects_format(error):
                raise _FormatRejected(self._status_message(error)) from None
            if error.status_code == 429 or error.status_code >= 500:
                raise _Retryable(BackendError(self._status_message(error))) from None
            raise BackendError(self._status_message(error)) from None
        except Exception as error:
            if _is_httpx_error(error, "TimeoutException"):  # a read stalled past the backstop, mid-stream
                raise BackendError(self._stalled_message(0)) from None
            if _is_httpx_error(error, "HTTPError"):
                raise BackendError(f"the answer from {self.base_url} broke off ({self.name}): {error}") from None
            if not isinstance(error, (openai.APIError, ValueError, TypeError, AttributeError, KeyError)):
                raise
            raise BackendError(
                f"{self.base_url} sent something that is not an OpenAI chat completion ({self.name}): "
                f"{error.__class__.__name__}: {_short(str(error))}"
            ) from None
        completion.latency_ms = (time.perf_counter() - started) * 1000
        return completion

    def _whole(self, request: dict) -> Completion:
        response = self._chat_client.chat.completions.create(**request)
        choices = getattr(response, "choices", None)
        if not choices:
            raise ValueError(f"no choices in the answer: {_short(repr(response))}")
        choice = choices[0]
        text = choice.message.content or ""
        return Completion(text=text, finish_reason=choice.finish_reason or "", **_usage(response.usage))

    def _stream(self, request: dict, on_token: TokenCallback | None, cancel: threading.Event | None) -> Completion:
        """A streamed answer, read in a helper thread so that the first-token and between-token
        timeouts hold whatever the server does (a stalled socket read cannot be interrupted)."""
        started = time.monotonic()
        stream = self._chat_client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
        chunks = _read_in_background(stream)
        pieces: list[str] = []
        finish_reason = ""
        usage = None
        saw_choice = False
        deadline = started + self.timeout
        try:
            # The lambda reads `deadline` at every wait, on purpose: each piece moves it on.
            for chunk in _chunks_until(chunks, lambda: deadline, cancel):  # noqa: B023
                if chunk is _TIMED_OUT:
                    raise BackendError(self._stalled_message(len(pieces)))
                if chunk is _CANCELLED:
                    cancelled = Cancelled(f"cancelled after {len(pieces)} pieces")
                    cancelled.partial_text = "".join(pieces)  # type: ignore[attr-defined]
                    raise cancelled
                if getattr(chunk, "usage", None):
                    usage = chunk.usage
                for choice in chunk.choices or []:
                    saw_choice = True
                    piece = choice.delta.content if choice.delta else None
                    if piece:
                        pieces.append(piece)
                        deadline = time.monotonic() + self.token_timeout
                        if on_token is not None:
                            try:
                                on_token(piece)
                            except Exception as error:
                                raise _CallerError(error) from error
                    finish_reason = choice.finish_reason or finish_reason
                if cancel is not None and cancel.is_set() and not finish_reason:
                    cancelled = Cancelled(f"cancelled after {len(pieces)} pieces")
                    cancelled.partial_text = "".join(pieces)  # type: ignore[attr-defined]
                    raise cancelled
        finally:
            with contextlib.suppress(Exception):
                stream.close()
        if not saw_choice:
            raise ValueError("the stream ended without any choices")
        text = "".join(pieces)
        if usage is not None:
            return Completion(text=text, finish_reason=finish_reason, **_usage(usage))
        # Servers that send no usage (llama-cpp-python) stream one token per chunk.
        return Completion(text=text, finish_reason=finish_reason, completion_tokens=len(pieces))

    def _stalled_message(self, tokens: int) -> str:
        if tokens == 0:
            return f"{self.base_url} did not answer within {self.timeout:g} s (no first token; {self.name})"
        return (
            f"{self.base_url} stopped sending after {tokens} tokens: nothing for {self.token_timeout:g} s, "
            f"the limit between tokens ({self.name})"
        )

    def _status_message(self, error: openai.APIStatusError) -> str:
        detail = getattr(error, "message", "") or str(error)
        body = error.response.text.strip() if error.response is not None else ""
        if body and body not in detail:
            detail = f"{detail} - {body}"
        detail = _short(detail)
        return f"{self.base_url} answered HTTP {error.status_code} ({self.name}): {detail}"

    # -- adapters (vLLM runtime LoRA) --------------------------------------------------------

    def set_adapter(self, adapter: str | Path | None) -> None:
        """Ask for the PEFT adapter at `adapter` (a path the server can read) from the next
        request on, or for the base model when None. Waits for requests in progress; on failure
        raises BackendError and keeps the current model."""
        with self._swap.swapping():
            if adapter is None:
                new_name = None
            else:
                new_name = next(self._lora_names)
                self._lora_call(LOAD_LORA, {"lora_name": new_name, "lora_path": str(adapter)})
            previous = self._lora_name
            self._lora_name = new_name
            self.model = new_name or self.spec.target
            self.spec = self.spec.with_adapter(adapter)
            if previous is not None:
                self._unload_quietly(previous)

    def _lora_call(self, endpoint: str, body: dict) -> None:
        url = f"{self.base_url}/{endpoint}"
        headers = {"Authorization": f"Bearer {self._client.api_key}"}
        try:
            response = httpx.post(url, json=body, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as error:
            raise BackendError(f"cannot reach {url} ({self.name}): {error}") from None
        if _endpoint_missing(response):
            raise BackendError(
                f"{self.base_url} has no /{endpoint} endpoint (HTTP {response.status_code}), so {self.name} "
                "cannot swap adapters at runtime. With vLLM, start the server with --enable-lora and "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or serve the adapter with --lora-modules NAME=PATH "
                "and use openai:NAME@URL"
            )
        if response.status_code >= 300:
            raise BackendError(
                f"{url} refused {body} (HTTP {response.status_code}, {self.name}): {_short(response.text)}"
            )

    def _unload_quietly(self, lora_name: str) -> None:
        """Free an adapter this backend loaded; a failure only leaves it loaded on the server."""
        try:
            self._lora_call(UNLOAD_LORA, {"lora_name": lora_name})
        except BackendError:
            pass

    def close(self) -> None:
        with self._swap.swapping():
            if self._lora_name is not None:
                self._unload_quietly(self._lora_name)
                self._lora_name = None
        self._client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _SwapGate:
    """Requests run concurrently; an adapter swap waits until none is in progress and holds
    new ones back until it is done, so no request is sent half-way through a swap."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._in_flight = 0
        self._swapping = False

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._swapping)
            self._in_flight += 1
        try:
            yield
        finally:
            with self._condition:
                self._in_flight -= 1
                self._condition.notify_all()

    @contextlib.contextmanager
    def swapping(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._swapping)
            self._swapping = True  # from here on, new requests wait
            self._condition.wait_for(lambda: self._in_flight == 0)
        try:
            yield
        finally:
            with self._condition:
                self._swapping = False
                self._condition.notify_all()


def _is_httpx_error(error: BaseException | None, class_name: str) -> bool:
    """Whether `error` is httpx's `class_name` (or a subclass); by name, because the openai
    SDK may ship its own copy of httpx under another module name."""
    return error is not None and any(
        cls.__name__ == class_name and cls.__module__.split(".")[0].startswith("httpx")
        for cls in type(error).__mro__
    )


class _Retryable(SotopiaError):
    """A failure worth one more try (a refused connection, HTTP 429 or 5xx); carries the error."""

    def __init__(self, error: BackendError) -> None:
        super().__init__(str(error))
        self.error = error


_TIMED_OUT = object()
_CANCELLED = object()
_END = object()
_POLL_S = 0.1


def _read_in_background(stream) -> queue.Queue:
    """Chunks of `stream` put on a queue by a daemon thread, then _END (or the exception)."""
    chunks: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for chunk in stream:
                chunks.put(chunk)
            chunks.put(_END)
        except BaseException as error:  # handed to the reader, which raises it
            chunks.put(error)

    threading.Thread(target=read, name="openai-stream", daemon=True).start()
    return chunks


def _chunks_until(chunks: queue.Queue, deadline: Callable[[], float], cancel: threading.Event | None) -> Iterator:
    """Chunks from the queue; _TIMED_OUT once `deadline()` passes with none, _CANCELLED once
    `cancel` is set while waiting. Raises what the reading thread raised."""
    while True:
        left = deadline() - time.monotonic()
        if left <= 0:
            yield _TIMED_OUT
            return
        try:
            item = chunks.get(timeout=min(left, _POLL_S) if cancel is not None else left)
        except queue.Empty:
            if cancel is not None and cancel.is_set():
                yield _CANCELLED
                return
            continue
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


class _FormatRejected(SotopiaError):
    """The server refused the request's response_format (HTTP 400/422)."""


class _CallerError(SotopiaError):
    """Carries an exception raised by the caller's on_token past our own error handling."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


def _endpoint_missing(response: httpx.Response) -> bool:
    """Whether a 404/405 means the server has no such route, rather than the endpoint itself
    answering "no such adapter" (vLLM's error documents carry a message; a missing route in
    FastAPI says {"detail": "Not Found"}, other servers send an HTML or empty page)."""
    if response.status_code == 405:
        return True
    if response.status_code != 404:
        return False
    try:
        document = response.json()
    except ValueError:
        return True
    if not isinstance(document, dict):
        return True
    error = document.get("error")
    return not (document.get("message") or (isinstance(error, dict) and error.get("message")))


def _rejects_format(error: openai.APIStatusError) -> bool:
    """Whether an error answer is the server refusing our response_format. Most servers say 400
    or 422; llama-cpp-python's server reports its validation errors as 500 naming the field."""
    if error.status_code in (400, 422):
        return True
    return "response_format" in str(error)


def _structured_request(mode: str, chat: list[dict], schema: dict) -> dict:
    if mode == JSON_SCHEMA:
        return {
            "messages": chat,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema},
            },
        }
    instructed = _with_instruction(chat, schema_instruction(schema))
    if mode == JSON_OBJECT:
        return {"messages": instructed, "response_format": {"type": "json_object", "schema": schema}}
    return {"messages": instructed}


def _with_instruction(chat: list[dict], instruction: str) -> list[dict]:
    """Append the instruction to the first system message (some chat templates allow only one)."""
    if chat and chat[0]["role"] == "system":
        first = {**chat[0], "content": f"{chat[0]['content']}\n\n{instruction}"}
        return [first, *chat[1:]]
    return [{"role": "system", "content": instruction}, *chat]


def _usage(usage) -> dict:
    if usage is None:
        return {}
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return {
        "prompt_tokens": usage.prompt_tokens or 0,
        "completion_tokens": usage.completion_tokens or 0,
        "cached_tokens": cached or 0,
    }


def _as_dict(message: ChatMessage | dict) -> dict:
    if isinstance(message, dict):
        return {"role": message["role"], "content": message["content"]}
    return {"role": message.role, "content": message.content}


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
