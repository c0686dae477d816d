"""Timeouts of the OpenAI-compatible backend mean what they say: the first token, the gap
between tokens and the whole answer each have their limit, named in the error and never
multiplied by retries; an empty answer is an error (the episode pauses), not an idle turn."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from sotopia_pi.backends import BackendError, create_backend
from sotopia_pi.backends.replay import ReplayBackend
from sotopia_pi.episode import ChatMessage, EpisodeStatus
from sotopia_pi.runner import EpisodeRunner, EpisodeSetup, new_episode
from sotopia_pi.store import Store

from .factories import action, seed_store
from .servers import chat_chunks, chat_completion, scripted_chat_server

MESSAGES = [ChatMessage(role="user", content="hello")]


@contextlib.contextmanager
def trickling_server(pieces: list[str], *, pause_before: int, pause_s: float) -> Iterator[str]:
    """Streams `pieces` one event at a time and goes silent for `pause_s` before piece
    number `pause_before` (0: before the first token, after the headers)."""
    stop = threading.Event()
    events = chat_chunks(pieces).events

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                for number, event in enumerate(events):
                    if number == pause_before:
                        self.wfile.flush()
                        stop.wait(pause_s)
                    self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_a_stream_that_stalls_between_tokens_fails_at_the_token_limit():
    with trickling_server(["Hel", "lo", " there"], pause_before=2, pause_s=20) as url:
        backend = create_backend(f"openai:x@{url}", timeout=10, token_timeout=0.6, max_retries=2)
        started = time.monotonic()
        with pytest.raises(BackendError, match=r"stopped sending after 2 tokens: nothing for 0\.6 s"):
            backend.complete(MESSAGES, on_token=lambda piece: None)
        assert time.monotonic() - started < 3


def test_no_first_token_fails_at_the_first_token_limit_without_retries():
    with trickling_server(["late"], pause_before=0, pause_s=20) as url:
        backend = create_backend(f"openai:x@{url}", timeout=0.8, token_timeout=5, max_retries=2)
        started = time.monotonic()
        with pytest.raises(BackendError, match=r"did not answer within 0\.8 s \(no first token"):
            backend.complete(MESSAGES, on_token=lambda piece: None)
        assert time.monotonic() - started < 3


def test_a_silent_server_is_not_waited_for_once_per_retry():
    calls = []

    def silent(request: dict, headers: dict):
        calls.append(time.monotonic())
        time.sleep(4)
        return 200, chat_completion("late")

    with scripted_chat_server(silent) as url:
        backend = create_backend(f"openai:x@{url}", timeout=0.7, max_retries=2)
        started = time.monotonic()
        with pytest.raises(BackendError, match=r"did not answer within 0\.7 s"):
            backend.complete(MESSAGES, max_tokens=5)
        assert time.monotonic() - started < 2.5
    assert len(calls) == 1


def test_a_server_error_is_tried_again():
    answers = [(503, {"error": {"message": "warming up"}}), (200, chat_completion("ready"))]

    with scripted_chat_server(lambda request, headers: answers.pop(0)) as url:
        backend = create_backend(f"openai:x@{url}", max_retries=1)
        assert backend.complete(MESSAGES).text == "ready"


@pytest.mark.parametrize("stream", [False, True])
def test_an_empty_answer_is_an_error(stream: bool):
    def empty(request: dict, headers: dict):
        return 200, chat_chunks([""]) if request.get("stream") else chat_completion("")

    with scripted_chat_server(empty) as url:
        backend = create_backend(f"openai:x@{url}", max_retries=0)
        with pytest.raises(BackendError, match="sent an empty answer"):
            backend.complete(MESSAGES, on_token=(lambda piece: None) if stream else None)


def test_an_empty_answer_pauses_the_episode_instead_of_ending_it(store: Store):
    seed_store(store)
    setup = EpisodeSetup(
        scenario_id="bike-sale", agent_ids=("ines", "tomas"), agent_models=("replay:a", "openai:x@url"),
        judge_model="", live_eval=False, stale_limit=1,
    )
    episode = new_episode(store, setup)

    def empty(request: dict, headers: dict):
        return 200, chat_chunks([""]) if request.get("stream") else chat_completion("   ")

    with scripted_chat_server(empty) as url:
        runner = EpisodeRunner(
            store, episode.id,
            backends={0: ReplayBackend([action("speak", "hi")], "a"), 1: create_backend(f"openai:x@{url}", max_retries=0)},
        )
        result = runner.run()
        runner.close()
    assert result.status == EpisodeStatus.paused
    assert "empty answer" in result.last_error
    assert len(store.turns(episode.id)) == 1


def test_a_connection_that_is_never_accepted_fails_at_the_connect_limit():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):  # fill the accept queue: later SYNs are dropped and connect() hangs
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        backend = create_backend(f"openai:x@http://127.0.0.1:{port}/v1", connect_timeout=0.5, timeout=20, max_retries=0)
        started = time.monotonic()
        with pytest.raises(BackendError, match=r"cannot connect to .* within 0\.5 s"):
            backend.complete(MESSAGES)
        assert time.monotonic() - started < 3
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
