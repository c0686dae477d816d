"""The OpenAI-compatible backend against real servers on loopback: llama-cpp-python's own server
running the embedded GGUF, and small scripted HTTP servers for protocol corners and failures."""

from __future__ import annotations

import json
import threading
import time

import pytest

from sotopia_pi.backends import BackendError, Cancelled, create_backend
from sotopia_pi.backends.openai_backend import INSTRUCTION, JSON_OBJECT, OpenAIBackend
from sotopia_pi.episode import AgentAction, ChatMessage, action_json_schema
from tests.servers import (
    canned_http_server,
    chat_chunks,
    chat_completion,
    free_port,
    llama_server,
    scripted_chat_server,
)

MESSAGES = [
    ChatMessage(role="system", content="You are Sam Rivera, a student who wants to buy a used bike cheaply."),
    ChatMessage(role="user", content="Jordan: Hi! The bike is $300. What do you think?"),
]
USAGE = {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32, "prompt_tokens_details": {"cached_tokens": 24}}


@pytest.fixture(scope="module")
def server():
    with llama_server() as running:
        yield running


@pytest.fixture
def backend(server) -> OpenAIBackend:
    with create_backend(server.model_name) as opened:
        yield opened


def test_completion_from_a_real_server(backend: OpenAIBackend):
    reply = backend.complete(MESSAGES, max_tokens=24, temperature=0)
    assert reply.text.strip()
    assert reply.prompt_tokens > 20 and 0 < reply.completion_tokens <= 24
    assert reply.finish_reason in {"stop", "length"}
    assert reply.latency_ms > 0


def test_streamed_tokens_arrive_in_order(backend: OpenAIBackend):
    pieces: list[str] = []
    arrival: list[float] = []

    def record(piece: str) -> None:
        pieces.append(piece)
        arrival.append(time.perf_counter())

    reply = backend.complete(MESSAGES, max_tokens=24, temperature=0, on_token=record)
    assert len(pieces) >= 3
    assert "".join(pieces) == reply.text
    assert arrival == sorted(arrival)
    assert reply.completion_tokens == len(pieces)  # no usage in this server's streams: one token a chunk
    whole = backend.complete(MESSAGES, max_tokens=24, temperature=0)
    assert whole.text == reply.text  # same greedy answer, streamed or not


def test_schema_output_parses_and_the_negotiated_mode_is_remembered(backend: OpenAIBackend):
    for _ in range(3):
        reply = backend.complete(MESSAGES, schema=action_json_schema(), max_tokens=300)
        # strict=False: the server's own grammar lets raw newlines into strings (only the
        # in-process backend tightens that rule).
        AgentAction.model_validate(json.loads(reply.text, strict=False))
    # llama-cpp-python's server refuses json_schema, but enforces json_object with a schema.
    assert backend.structured_mode == JSON_OBJECT


def test_cancel_stops_the_stream(backend: OpenAIBackend):
    cancel = threading.Event()
    pieces: list[str] = []

    def stop_after_two(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 2:
            cancel.set()

    with pytest.raises(Cancelled) as raised:
        backend.complete(MESSAGES, max_tokens=300, on_token=stop_after_two, cancel=cancel)
    assert raised.value.partial_text == "".join(pieces) and len(pieces) == 2
    assert backend.complete(MESSAGES, max_tokens=4).text  # the connection pool still works


def test_a_stopped_server_fails_fast_with_its_url():
    with llama_server() as doomed:
        backend = create_backend(doomed.model_name)
        assert backend.complete(MESSAGES, max_tokens=2).text is not None
        doomed.stop()
        started = time.monotonic()
        with pytest.raises(BackendError, match=f"cannot reach {doomed.url}.*refused"):
            backend.complete(MESSAGES, max_tokens=2)
        assert time.monotonic() - started < 10  # the SDK's two quick retries, not a hang


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("status", "body", "content_type", "message"),
    [
        (500, b"the model crashed", "text/plain", r"answered HTTP 500 .*the model crashed"),
        (200, b"<html>hello</html>", "text/html", "not an OpenAI chat completion"),
        (200, b'{"unexpected": true}', "application/json", "not an OpenAI chat completion"),
        (404, b'{"error": {"message": "model x does not exist"}}', "application/json", "HTTP 404 .*model x does not exist"),
    ],
)
def test_garbage_answers_are_clear_errors(stream: bool, status: int, body: bytes, content_type: str, message: str):
    with canned_http_server(status, body, content_type) as url:
        backend = create_backend(f"openai:x@{url}", max_retries=0)
        on_token = (lambda piece: None) if stream else None
        with pytest.raises(BackendError, match=message) as raised:
            backend.complete(MESSAGES, max_tokens=5, on_token=on_token)
    assert url in str(raised.value)


def test_a_silent_server_times_out():
    def never_answer(request: dict, headers: dict):
        time.sleep(3)
        return 200, chat_completion("late")

    with scripted_chat_server(never_answer) as url:
        backend = create_backend(f"openai:x@{url}", timeout=0.5, max_retries=0)
        started = time.monotonic()
        with pytest.raises(BackendError, match=r"did not answer within 0\.5 s"):
            backend.complete(MESSAGES, max_tokens=5)
        assert time.monotonic() - started < 2.5


def test_plain_text_fallback_when_the_server_refuses_every_response_format():
    requests: list[dict] = []

    def no_structured_output(request: dict, headers: dict):
        requests.append(request)
        if "response_format" in request:
            return 400, {"error": {"message": "response_format is not supported"}}
        return 200, chat_completion('{"action_type": "speak", "argument": "hi"}', usage=USAGE)

    schema = action_json_schema()
    with scripted_chat_server(no_structured_output) as url:
        backend = create_backend(f"openai:m@{url}")
        first = backend.complete(MESSAGES, schema=schema)
        second = backend.complete(MESSAGES, schema=schema)
    kinds = [request.get("response_format", {}).get("type", "none") for request in requests]
    assert kinds == ["json_schema", "json_object", "none", "none"]  # negotiated once, then remembered
    assert backend.structured_mode == INSTRUCTION
    system = requests[-1]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith(MESSAGES[0].content)
    assert json.dumps(schema["properties"]["action_type"]["enum"]) in system["content"]
    assert first.text == second.text == '{"action_type": "speak", "argument": "hi"}'
    assert (first.prompt_tokens, first.completion_tokens, first.cached_tokens) == (30, 2, 24)


def test_json_schema_is_sent_first_with_bounded_integers_as_enums():
    requests: list[dict] = []

    def accept(request: dict, headers: dict):
        requests.append(request)
        return 200, chat_completion('{"score": 3}')

    schema = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 4}}}
    with scripted_chat_server(accept) as url:
        create_backend(f"openai:m@{url}").complete(MESSAGES, schema=schema)
    sent = requests[0]["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"]["properties"]["score"] == {"type": "integer", "enum": [0, 1, 2, 3, 4]}


def test_streamed_usage_and_cached_tokens_are_reported():
    requests: list[dict] = []

    def stream(request: dict, headers: dict):
        requests.append(request)
        return 200, chat_chunks(["Hel", "lo", "!"], usage=USAGE)

    pieces: list[str] = []
    with scripted_chat_server(stream) as url:
        reply = create_backend(f"openai:m@{url}").complete(MESSAGES, on_token=pieces.append)
    assert pieces == ["Hel", "lo", "!"] and reply.text == "Hello!"
    assert (reply.prompt_tokens, reply.completion_tokens, reply.cached_tokens) == (30, 2, 24)
    assert requests[0]["stream"] is True and requests[0]["stream_options"] == {"include_usage": True}


def test_api_keys_come_from_the_environment_and_are_never_needed_locally(monkeypatch: pytest.MonkeyPatch):
    seen: list[str] = []

    def record_key(request: dict, headers: dict):
        seen.append(headers.get("authorization", ""))
        return 200, chat_completion("ok")

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("SOTOPIA_PI_API_KEY", raising=False)
    with pytest.raises(BackendError, match="needs an API key: set SOTOPIA_PI_API_KEY or OPENAI_API_KEY"):
        create_backend("openai:gpt-4o-mini")
    with scripted_chat_server(record_key) as url:
        create_backend(f"openai:m@{url}").complete(MESSAGES)
        monkeypatch.setenv("OPENAI_API_KEY", "from-openai-variable")
        create_backend(f"openai:m@{url}").complete(MESSAGES)
        monkeypatch.setenv("SOTOPIA_PI_API_KEY", "from-project-variable")
        create_backend(f"openai:m@{url}").complete(MESSAGES)
    assert seen == ["Bearer none", "Bearer from-openai-variable", "Bearer from-project-variable"]


def test_a_refused_key_says_which_variables_to_set():
    with canned_http_server(401, b'{"error": {"message": "Incorrect API key"}}') as url:
        with pytest.raises(BackendError, match="HTTP 401 .*Incorrect API key.*set SOTOPIA_PI_API_KEY or OPENAI_API_KEY"):
            create_backend(f"openai:m@{url}", max_retries=0).complete(MESSAGES)


def test_adapters_are_not_silently_ignored():
    # +adapter= loads the adapter through vLLM's runtime LoRA endpoint (tests/test_adapter_swap.py)
    with pytest.raises(BackendError, match="cannot reach .*/load_lora_adapter"):
        create_backend(f"openai:m@http://127.0.0.1:{free_port()}/v1+adapter=/tmp/a.gguf")


def test_errors_from_the_callers_callback_are_not_renamed():
    def stream(request: dict, headers: dict):
        return 200, chat_chunks(["a", "b"])

    def broken_callback(piece: str) -> None:
        raise ValueError("the UI went away")

    with scripted_chat_server(stream) as url:
        with pytest.raises(ValueError, match="the UI went away"):
            create_backend(f"openai:m@{url}").complete(MESSAGES, on_token=broken_callback)
