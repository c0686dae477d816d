"""Real servers on loopback for tests: llama-cpp-python's OpenAI-compatible server running the
embedded GGUF, and a tiny HTTP server that answers whatever a test tells it to (garbage, errors,
files to download).

    with llama_server() as server:            # waits until /v1/models answers
        backend = create_backend(server.model_name)
        ...
        server.stop()                          # e.g. mid-episode, to test the failure path

    with canned_http_server(status=500, body=b"oops") as url: ...
    with scripted_chat_server(respond) as url: ...  # respond(request_json, headers) decides
    with file_server(directory) as base_url: ...   # GET and Range requests
    with lora_chat_server() as server: ...          # a fake vLLM with runtime LoRA endpoints
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class RunningServer:
    process: subprocess.Popen
    port: int
    log_path: Path
    model: str = "local"
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """The OpenAI base URL (ends in /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model_name(self) -> str:
        """A sotopia-pi model name that points at this server."""
        return f"openai:{self.model}@{self.url}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_llama_server(
    model_path: str | Path | None = None,
    *,
    n_ctx: int = 2048,
    n_threads: int = 1,
    startup_timeout: float = 60.0,
    extra_args: tuple[str, ...] = (),
) -> RunningServer:
    """Start `python -m sotopia_pi.backends.llama_server` on a free loopback port and wait for it."""
    port = free_port()
    log_handle = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
    command = [
        sys.executable, "-m", "sotopia_pi.backends.llama_server",
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx), "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads),
        "--verbose", "False",
        *extra_args,
    ]  # fmt: skip
    if model_path is not None:
        command += ["--model", str(model_path)]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    log_handle.close()
    server = RunningServer(process=process, port=port, log_path=Path(log_handle.name))
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/models", timeout=1.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"llama server did not answer on {server.url} within {startup_timeout} s:\n{server.log_tail()}")


@contextlib.contextmanager
def llama_server(model_path: str | Path | None = None, **options) -> Iterator[RunningServer]:
    server = start_llama_server(model_path, **options)
    try:
        yield server
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            os.unlink(server.log_path)


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass


@contextlib.contextmanager
def _serving(handler_class) -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def canned_http_server(
    status: int = 200, body: bytes = b"", content_type: str = "application/json"
) -> Iterator[str]:
    """A loopback server that answers every request with the same status and body.
    Yields its base URL with /v1 appended (so it can stand in for an OpenAI server)."""

    class Handler(_QuietHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    with _serving(Handler) as base:
        yield f"{base}/v1"


@dataclass
class SSE:
    """A streamed answer: each event is sent as `data: <json>`, then `data: [DONE]`."""

    events: list[dict]


def chat_completion(content: str, *, finish_reason: str = "stop", usage: dict | None = None) -> dict:
    """A minimal, valid OpenAI chat-completion document."""
    document = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "scripted",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
    }
    if usage is not None:
        document["usage"] = usage
    return document


def chat_chunks(pieces: list[str], *, usage: dict | None = None) -> SSE:
    """The streamed form of a reply: one chunk per piece, a final chunk, an optional usage chunk."""

    def chunk(delta: dict, finish_reason: str | None) -> dict:
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "scripted",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    events = [chunk({"role": "assistant", "content": piece}, None) for piece in pieces]
    events.append(chunk({}, "stop"))
    if usage is not None:
        events.append(
            {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": "scripted", "choices": [], "usage": usage}
        )
    return SSE(events)


Responder = Callable[[dict, dict], "tuple[int, dict | SSE | bytes]"]


@contextlib.contextmanager
def scripted_chat_server(respond: Responder) -> Iterator[str]:
    """A loopback server whose every POST is answered by `respond(request_json, headers)`
    (header names in lower case),
    which returns (status, payload): a dict is sent as JSON, an SSE as an event stream, bytes
    as text/plain. Yields the base URL with /v1 appended."""

    class Handler(_QuietHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, payload = respond(json.loads(raw or b"{}"), headers)
            _send_payload(self, status, payload)

    with _serving(Handler) as base:
        yield f"{base}/v1"


class _RangeFileHandler(http.server.SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler plus single `bytes=N-` Range requests (for resumed downloads).
    `cut_after` (bytes) makes it drop the connection part-way, like a broken network."""

    cut_after: int | None = None
    supports_range: bool = True

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        header = self.headers.get("Range")
        if header and self.supports_range and header.startswith("bytes=") and header.endswith("-"):
            start = int(header[len("bytes=") : -1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        payload = data[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.cut_after is not None and self.cut_after < len(payload):
            self.wfile.write(payload[: self.cut_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)


@contextlib.contextmanager
def file_server(directory: str | Path, *, cut_after: int | None = None, supports_range: bool = True) -> Iterator[str]:
    """Serve the files of `directory` on loopback; yields the base URL."""
    handler = type(
        "FileHandler",
        (_RangeFileHandler,),
        {"cut_after": cut_after, "supports_range": supports_range},
    )
    with _serving(functools.partial(handler, directory=str(directory))) as base:
        yield base


@dataclass
class LoraChatServer:
    """What the fake vLLM saw and holds: `loaded` maps lora_name to lora_path."""

    url: str
    base_model: str
    loaded: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, dict]] = field(default_factory=list)


def _vllm_error(message: str, kind: str, status: int) -> dict:
    return {"object": "error", "message": message, "type": kind, "param": None, "code": status}


@contextlib.contextmanager
def lora_chat_server(base_model: str = "base", *, dynamic_lora: bool = True) -> Iterator[LoraChatServer]:
    """A fake vLLM on loopback. Chat completions (whole or streamed) answer with a speak action
    whose argument is the model the request asked for; an unknown model is a 404, as in vLLM.
    With `dynamic_lora`, POST /v1/load_lora_adapter and /v1/unload_lora_adapter behave like
    vLLM's (a lora_path must be an existing directory here; a name loads once); without it they
    are missing routes (404 {"detail": "Not Found"}, as FastAPI answers)."""
    state = LoraChatServer(url="", base_model=base_model)
    lock = threading.Lock()

    def load(body: dict) -> tuple[int, dict | bytes]:
        name, path = body.get("lora_name"), body.get("lora_path")
        if name in state.loaded:
            return 400, _vllm_error(f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput", 400)
        if not path or not Path(path).is_dir():
            return 404, _vllm_error(f"No adapter found for {path}", "NotFoundError", 404)
        state.loaded[name] = path
        return 200, f"Success: LoRA adapter '{name}' added successfully.".encode()

    def unload(body: dict) -> tuple[int, dict | bytes]:
        name = body.get("lora_name")
        if state.loaded.pop(name, None) is None:
            return 404, _vllm_error(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
        return 200, f"Success: LoRA adapter '{name}' removed successfully.".encode()

    def chat(body: dict) -> tuple[int, dict | SSE]:
        model = body.get("model")
        if model != base_model and model not in state.loaded:
            return 404, _vllm_error(f"The model `{model}` does not exist.", "NotFoundError", 404)
        action = json.dumps({"action_type": "speak", "argument": model})
        if body.get("stream"):
            return 200, chat_chunks([action[:10], action[10:]])
        return 200, chat_completion(action)

    routes = {"/v1/chat/completions": chat}
    if dynamic_lora:
        routes.update({"/v1/load_lora_adapter": load, "/v1/unload_lora_adapter": unload})

    def respond(path: str, body: dict) -> tuple[int, dict | SSE | bytes]:
        with lock:
            state.calls.append((path, body))
            route = routes.get(path)
            return route(body) if route else (404, {"detail": "Not Found"})

    class Handler(_QuietHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, payload = respond(self.path, json.loads(raw or b"{}"))
            _send_payload(self, status, payload)

    with _serving(Handler) as base:
        state.url = f"{base}/v1"
        yield state


def _send_payload(handler: http.server.BaseHTTPRequestHandler, status: int, payload: dict | SSE | bytes) -> None:
    if isinstance(payload, SSE):
        body = b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in payload.events)
        body += b"data: [DONE]\n\n"
        content_type = "text/event-stream"
    elif isinstance(payload, dict):
        body, content_type = json.dumps(payload).encode(), "application/json"
    else:
        body, content_type = payload, "text/plain"
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (a timeout test)
