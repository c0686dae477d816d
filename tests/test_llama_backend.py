"""The llama.cpp backend on the real embedded GGUF (SmolLM2-135M-Instruct Q4_1)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import gguf
import numpy as np
import pytest

from sotopia_pi.backends import BackendError, Cancelled, ChatBackend, create_backend, shipped_adapter
from sotopia_pi.backends.base import parse_model_name
from sotopia_pi.backends.llama_cpp_backend import PROMPT_SLICE_TOKENS, LlamaCppBackend
from sotopia_pi.backends.lora_merge import merge_cache_dir
from sotopia_pi.catalog import embedded_model_path
from sotopia_pi.episode import AgentAction, ChatMessage, action_json_schema

FAST = {"n_ctx": 2048}
SYSTEM_SAM = (
    "You are Sam Rivera, a graduate student. Jordan is selling a used mountain bike for $300. "
    "Your private goal: buy it for at most $200. Reply in one short sentence."
)
SYSTEM_JORDAN = (
    "You are Jordan Lee, a nurse who is moving next week and must sell a mountain bike. "
    "Your private goal: get at least $250. Reply in one short sentence."
)


def chat(system: str, *turns: str) -> list[ChatMessage]:
    messages = [ChatMessage(role="system", content=system)]
    for index, text in enumerate(turns):
        messages.append(ChatMessage(role="user" if index % 2 == 0 else "assistant", content=text))
    return messages


@pytest.fixture(scope="module")
def backend():
    with create_backend("embedded", seed=7, **FAST) as opened:
        yield opened


def test_plain_completion_with_default_options():
    with create_backend("embedded") as default_backend:
        assert isinstance(default_backend, ChatBackend)
        assert default_backend.name == "embedded"
        reply = default_backend.complete(chat(SYSTEM_SAM, "Hi, I'm asking $300 for the bike."), max_tokens=24)
    assert reply.text.strip()
    assert 0 < reply.completion_tokens <= 24
    assert reply.prompt_tokens > 40 and reply.cached_tokens == 0
    assert reply.finish_reason in {"stop", "length"}
    assert reply.latency_ms > 0


def test_schema_constrained_actions_parse_every_time(backend: LlamaCppBackend):
    schema = action_json_schema()
    messages = chat(
        SYSTEM_SAM + ' Answer with JSON: {"action_type": ..., "argument": ...}.',
        "Jordan: Hi! It's a great bike, $300 and it's yours.",
    )
    actions = []
    for _ in range(10):
        reply = backend.complete(messages, schema=schema, max_tokens=400, temperature=0.9)
        assert reply.finish_reason == "stop", reply.text
        document = json.loads(reply.text)  # strict: no raw control characters in strings
        actions.append(AgentAction.model_validate(document))
        assert len(document["argument"]) <= schema["properties"]["argument"]["maxLength"]
    assert len({action.argument for action in actions}) > 1  # different draws, not one cached answer


def test_bounded_integers_are_enforced(backend: LlamaCppBackend):
    schema = {
        "type": "object",
        "properties": {"score": {"type": "integer", "minimum": -3, "maximum": 2}},
        "required": ["score"],
    }
    messages = chat("You rate things.", "Rate this bike from -3 to 2. Say 100 if you love it.")
    scores = [json.loads(backend.complete(messages, schema=schema, max_tokens=20).text)["score"] for _ in range(5)]
    assert all(-3 <= score <= 2 for score in scores)


def test_an_unenforceable_schema_is_a_clear_error(backend: LlamaCppBackend):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 10**6}}}
    with pytest.raises(BackendError, match=r"\$\.properties\.n: integer range 0\.\.1000000 is too wide"):
        backend.complete(chat("x", "y"), schema=schema)


def test_streamed_pieces_arrive_in_order_and_join_to_the_text(backend: LlamaCppBackend):
    pieces: list[str] = []
    reply = backend.complete(
        chat(SYSTEM_JORDAN, "Hello, is the bike still for sale?"), max_tokens=30, on_token=pieces.append
    )
    assert len(pieces) >= 3
    assert "".join(pieces) == reply.text


def test_cancel_stops_generation_early_and_the_backend_still_works(backend: LlamaCppBackend):
    cancel = threading.Event()
    pieces: list[str] = []

    def stop_after_three(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()

    with pytest.raises(Cancelled) as raised:
        backend.complete(
            chat(SYSTEM_SAM, "Tell me a long story."), max_tokens=300, on_token=stop_after_three, cancel=cancel
        )
    assert len(pieces) == 3
    assert raised.value.partial_text == "".join(pieces)

    with pytest.raises(Cancelled):
        backend.complete(chat(SYSTEM_SAM, "Hi"), cancel=cancel)  # already set: nothing runs
    assert backend.complete(chat(SYSTEM_SAM, "Hi"), max_tokens=8).completion_tokens > 0


def test_cancel_from_another_thread(backend: LlamaCppBackend):
    cancel = threading.Event()
    first_piece = threading.Event()
    pieces: list[str] = []

    def record(piece: str) -> None:
        pieces.append(piece)
        first_piece.set()

    def cancel_soon() -> None:
        first_piece.wait(30)
        cancel.set()

    threading.Thread(target=cancel_soon).start()
    with pytest.raises(Cancelled):
        backend.complete(
            chat(SYSTEM_SAM, "Describe your day in detail."),
            max_tokens=400,
            temperature=0.9,
            on_token=record,
            cancel=cancel,
        )
    assert len(pieces) < 50


def test_a_cancel_while_the_prompt_is_read_stops_within_one_slice(backend: LlamaCppBackend):
    """Taking over a side must not wait for a long prompt to be read whole."""
    backend.reset_cache()
    long_prompt = chat(SYSTEM_SAM + " The bike has new tyres, a serviced chain and a bell." * 40, "Jordan: $300.")
    cancel = threading.Event()
    reads: list[int] = []
    read = backend.llm.eval

    def read_then_cancel(tokens) -> None:
        reads.append(len(tokens))
        read(tokens)
        cancel.set()

    backend.llm.eval = read_then_cancel  # type: ignore[method-assign]
    try:
        with pytest.raises(Cancelled, match="prompt tokens"):
            backend.complete(long_prompt, max_tokens=20, cancel=cancel)
    finally:
        del backend.llm.eval
    assert reads == [PROMPT_SLICE_TOKENS] and backend.llm.n_tokens == PROMPT_SLICE_TOKENS
    again = backend.complete(long_prompt, max_tokens=20, temperature=0, cancel=threading.Event())
    assert again.cached_tokens == PROMPT_SLICE_TOKENS  # what was read before the cancel is kept
    assert again.prompt_tokens > 4 * PROMPT_SLICE_TOKENS and again.text


def test_prompt_extending_the_last_one_comes_from_the_cache(backend: LlamaCppBackend):
    backend.reset_cache()
    first_turns = ("Jordan: Hi, you must be Sam. The bike is $300.",)
    first = backend.complete(chat(SYSTEM_SAM, *first_turns), max_tokens=20, temperature=0)
    assert first.cached_tokens == 0
    second = backend.complete(
        chat(SYSTEM_SAM, *first_turns, first.text, "Jordan: It's barely used. What do you say?"),
        max_tokens=20,
        temperature=0,
    )
    assert second.cached_tokens >= first.prompt_tokens  # the whole first prompt was reused
    assert second.cached_tokens < second.prompt_tokens
    # The same prompt again: everything but the last token, which is re-run for fresh logits.
    again = backend.complete(
        chat(SYSTEM_SAM, *first_turns, first.text, "Jordan: It's barely used. What do you say?"),
        max_tokens=20,
        temperature=0,
    )
    assert again.cached_tokens == again.prompt_tokens - 1
    assert again.text == second.text
    sliced = backend.complete(  # read in slices (a cancel can come): the same cache, the same answer
        chat(SYSTEM_SAM, *first_turns, first.text, "Jordan: It's barely used. What do you say?"),
        max_tokens=20,
        temperature=0,
        cancel=threading.Event(),
    )
    assert (sliced.cached_tokens, sliced.prompt_tokens, sliced.text) == (again.cached_tokens, again.prompt_tokens, again.text)


def test_each_backend_keeps_its_own_cache_and_a_shared_llama_does_not():
    sam_turns = ["Jordan: Hi! The bike is $300."]
    jordan_turns = ["Sam: Hi, I saw your ad for the bike."]
    with create_backend("embedded", **FAST) as sam, create_backend("embedded", **FAST) as jordan:
        sam.complete(chat(SYSTEM_SAM, *sam_turns), max_tokens=10, temperature=0)
        jordan.complete(chat(SYSTEM_JORDAN, *jordan_turns), max_tokens=10, temperature=0)
        prompt = chat(SYSTEM_SAM, *sam_turns, "Sounds good.", "Jordan: So?")
        own = sam.complete(prompt, max_tokens=10, temperature=0)
        shared_llama_a = LlamaCppBackend.from_spec(parse_model_name("embedded"), llama=sam.llm)
        shared_llama_b = LlamaCppBackend.from_spec(parse_model_name("embedded"), llama=sam.llm)
        shared_llama_a.complete(chat(SYSTEM_SAM, *sam_turns), max_tokens=10, temperature=0)
        shared_llama_b.complete(chat(SYSTEM_JORDAN, *jordan_turns), max_tokens=10, temperature=0)
        shared = shared_llama_a.complete(prompt, max_tokens=10, temperature=0)
        shared_llama_a.close()  # does not close the Llama it borrowed
        assert sam.complete(chat(SYSTEM_SAM, "Hi"), max_tokens=2).text is not None
    assert own.cached_tokens > 40
    assert shared.cached_tokens < 10  # the other agent's system prompt evicted this one's prefix
    assert shared.text == own.text


def test_two_threads_never_run_one_llama_at_once(backend: LlamaCppBackend):
    results: list[str] = []
    errors: list[BaseException] = []

    def run(text: str) -> None:
        try:
            results.append(backend.complete(chat(SYSTEM_SAM, text), max_tokens=12, temperature=0).text)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(f"Question number {i}?",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(results) == 3


def test_prompt_longer_than_the_context_is_a_backend_error():
    with create_backend("embedded", n_ctx=256) as small:
        with pytest.raises(BackendError, match="exceed context window"):
            small.complete(chat("x", "word " * 400), max_tokens=5)


def test_missing_files_and_closed_backends_give_clear_errors(tmp_path: Path, backend: LlamaCppBackend):
    with pytest.raises(BackendError, match="GGUF file not found: .*nope.gguf"):
        create_backend(f"gguf:{tmp_path / 'nope.gguf'}")
    with pytest.raises(BackendError, match="run `sotopia-pi models pull qwen2.5-0.5b`"):
        create_backend("catalog:qwen2.5-0.5b")
    closed = create_backend(f"gguf:{embedded_model_path()}", **FAST)
    closed.close()
    with pytest.raises(BackendError, match="closed"):
        closed.complete(chat("x", "y"))


# -- LoRA adapters --------------------------------------------------------------------------------


def write_lora(path: Path, *, arch: str = "llama", width: int = 576, rank: int = 4, amplitude: float = 0.2) -> Path:
    """A random rank-4 LoRA on every attention output projection of SmolLM2-135M (30 layers)."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    for layer in range(30):
        name = f"blk.{layer}.attn_output.weight"
        writer.add_tensor(f"{name}.lora_a", (rng.standard_normal((rank, width)) * amplitude).astype(np.float32))
        writer.add_tensor(f"{name}.lora_b", (rng.standard_normal((width, rank)) * amplitude).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_adapter_swap_changes_output_and_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    adapter = write_lora(tmp_path / "lora.gguf")
    question = chat("You are a helpful assistant.", "What is the capital of France?")
    with create_backend("embedded", **FAST) as agent:
        base = agent.complete(question, max_tokens=16, temperature=0).text
        agent.set_adapter(adapter)
        assert agent.adapter_path == adapter
        adapted = agent.complete(question, max_tokens=16, temperature=0)
        assert adapted.cached_tokens == 0  # the swap dropped the stale KV cache
        agent.set_adapter(adapter, scale=0.0)
        assert agent.complete(question, max_tokens=16, temperature=0).text == base
        agent.set_adapter(None)
        assert agent.adapter_path is None
        assert agent.complete(question, max_tokens=16, temperature=0).text == base
    assert adapted.text != base

    monkeypatch.setenv("SOTOPIA_PI_MERGE_ADAPTERS", "0")  # opened with the adapter at run time, as swapped in
    with create_backend(f"embedded+adapter={adapter}", **FAST) as loaded:
        assert loaded.name == f"embedded+adapter={adapter}" and not loaded.adapter_merged
        assert loaded.complete(question, max_tokens=16, temperature=0).text == adapted.text


def next_token_logits(backend: LlamaCppBackend, messages: list[ChatMessage]) -> np.ndarray:
    from sotopia_pi.backends.llama_native import chat_prompt_tokens, read_prompt

    backend.reset_cache()
    chat_dicts = [{"role": m.role, "content": m.content} for m in messages]
    return read_prompt(backend.llm, chat_prompt_tokens(backend.llm, chat_dicts))[1].copy()


def test_an_adapter_the_model_opens_with_is_merged_and_answers_as_at_run_time():
    adapter = shipped_adapter("embedded-bc", "embedded")
    assert adapter is not None
    question = chat(SYSTEM_SAM, "Hi, I saw your note about the bike. Is it still for sale?")
    with create_backend("embedded", **FAST) as base:
        plain = next_token_logits(base, question)
        base.set_adapter(adapter)
        at_run_time = next_token_logits(base, question)
    with create_backend(f"embedded+adapter={adapter}", **FAST) as merged:
        assert merged.adapter_merged and merged.adapter == adapter
        assert merged.name == f"embedded+adapter={adapter}"
        folded = next_token_logits(merged, question)
        # back to the bare base: it opens the base file again, and answers exactly as the base
        merged.set_adapter(None)
        assert not merged.adapter_merged and merged.adapter is None
        assert np.array_equal(next_token_logits(merged, question), plain)
    # The merged weights are Q8_0 where the base's are Q4_1: close, not bit-identical (measured:
    # a mean logit difference of 0.14 against the adapter's own change of 0.96).
    change = np.abs(at_run_time - plain).mean()
    assert np.abs(folded - at_run_time).mean() < 0.3 * change
    assert np.argmax(folded) == np.argmax(at_run_time) != np.argmax(plain)
    assert list(merge_cache_dir().glob("SmolLM2-135M-Instruct.Q4_1+embedded-bc-*.gguf"))


def test_a_merged_backend_swaps_at_run_time_and_refusals_keep_the_merged_model(tmp_path: Path):
    first = write_lora(tmp_path / "first.gguf", amplitude=0.3)
    second = write_lora(tmp_path / "second.gguf", arch="qwen2")
    question = chat("You are a helpful assistant.", "Name a color.")
    with create_backend(f"embedded+adapter={first}", **FAST) as agent:
        assert agent.adapter_merged
        before = agent.complete(question, max_tokens=8, temperature=0).text
        with pytest.raises(BackendError, match="adapter for 'qwen2' models"):
            agent.set_adapter(second)
        assert agent.adapter_merged and agent.adapter == first
        assert agent.complete(question, max_tokens=8, temperature=0).text == before
        agent.set_adapter(first)  # the same adapter, now at run time on the bare base
        assert not agent.adapter_merged and agent.adapter == first


def test_an_adapter_that_cannot_be_merged_runs_at_run_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    adapter = write_lora(tmp_path / "lora.gguf")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("SOTOPIA_PI_MERGE_CACHE", str(blocker / "cache"))
    with create_backend(f"embedded+adapter={adapter}", **FAST) as agent:
        assert agent.adapter == adapter and not agent.adapter_merged
        assert agent.complete(chat("Be brief.", "Say hi."), max_tokens=4, temperature=0).text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "junk.gguf").write_bytes(b"not a model at all" * 8) and d / "junk.gguf", "is not a GGUF file"),
        (
            lambda d: write_lora(d / "qwen.gguf", arch="qwen2"),
            "adapter for 'qwen2' models, but the running model is 'llama'",
        ),
        (lambda d: write_lora(d / "narrow.gguf", width=512), "incorrect shape"),
        (lambda d: d / "absent.gguf", "LoRA adapter not found"),
    ],
)
def test_bad_adapter_is_a_clear_error_and_keeps_the_previous_one(tmp_path: Path, make, message: str):
    good = write_lora(tmp_path / "good.gguf")
    bad = make(tmp_path)
    question = chat("You are a helpful assistant.", "Name a color.")
    with create_backend("embedded", **FAST) as agent:
        agent.set_adapter(good)
        before = agent.complete(question, max_tokens=8, temperature=0).text
        with pytest.raises(BackendError, match=message):
            agent.set_adapter(bad)
        assert agent.adapter_path == good
        assert agent.complete(question, max_tokens=8, temperature=0).text == before
    with pytest.raises(BackendError, match=message):
        create_backend(f"embedded+adapter={bad}", **FAST)


# -- process-wide llama.cpp settings -------------------------------------------------------------


def _in_fresh_python(code: str, **env: str) -> str:
    import os
    import subprocess
    import sys

    environment = {key: value for key, value in os.environ.items() if key not in {"OMP_WAIT_POLICY", *env}}
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_openmp_threads_sleep_instead_of_spinning_unless_the_user_chose():
    code = "import os, sotopia_pi.backends.llama_cpp_backend; print(os.environ['OMP_WAIT_POLICY'])"
    assert _in_fresh_python(code) == "PASSIVE"
    assert _in_fresh_python(code, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_extra_weight_buffers_can_be_switched_off_for_amx_machines():
    code = (
        "import llama_cpp; from sotopia_pi.backends.llama_native import make_model_loading_safe; "
        "make_model_loading_safe(); print(llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts)"
    )
    assert _in_fresh_python(code, SOTOPIA_PI_LLAMA_EXTRA_BUFFERS="0") == "False"
    assert _in_fresh_python(code, SOTOPIA_PI_LLAMA_EXTRA_BUFFERS="1") == "True"


def test_errors_from_the_callers_callback_are_not_renamed(backend: LlamaCppBackend):
    def broken_callback(piece: str) -> None:
        raise ValueError("the UI went away")

    with pytest.raises(ValueError, match="the UI went away"):
        backend.complete(chat(SYSTEM_SAM, "Hi"), max_tokens=8, on_token=broken_callback)
    assert backend.complete(chat(SYSTEM_SAM, "Hi"), max_tokens=4).text is not None


def test_prompt_state_reads_the_merged_weights_beside_the_kv_cache(tmp_path: Path):
    question = chat(SYSTEM_SAM, "Hi, I saw your note about the bike. Is it still for sale?")
    other = chat(SYSTEM_JORDAN, "Would you take $150 for it, cash today?")
    with create_backend("embedded-base+adapter=embedded-judge", **FAST) as judge:
        assert judge.adapter_merged
        judge.complete(question, max_tokens=4, temperature=0)
        cached = judge.llm.n_tokens
        state = judge.prompt_state(question, 256)
        assert state.shape == (576,) and np.isfinite(state).all()
        assert np.array_equal(judge.prompt_state(question, 256), state)
        assert not np.allclose(judge.prompt_state(other, 256), state)
        assert judge.llm.n_tokens == cached  # the answering context kept its cache
    with create_backend("embedded-base+adapter=embedded-judge", **FAST) as bare:
        bare.set_adapter(None)
        assert not np.allclose(bare.prompt_state(question, 256), state)  # read with the base's weights
        bare.set_adapter(write_lora(tmp_path / "lora.gguf"))
        with pytest.raises(BackendError, match="adapter merged"):
            bare.prompt_state(question, 256)
