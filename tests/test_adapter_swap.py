"""Adapter hot-swap: backends that swap in place say so, the runner swaps a side's adapter
between turns (in place, or by reloading a backend that cannot), the turns record the adapter
that played them, and a bad adapter is refused with the previous one kept.

Real models: the embedded SmolLM2 GGUF with random GGUF LoRAs (tests/lora_files.py), and a fake
vLLM with runtime LoRA endpoints on loopback (tests/servers.py).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from sotopia_pi.backends import AdapterSwapping, BackendError, Completion, ModelSpec, create_backend
from sotopia_pi.backends.human import HumanBackend
from sotopia_pi.backends.llama_cpp_backend import LlamaCppBackend
from sotopia_pi.backends.replay import ReplayBackend
from sotopia_pi.episode import ChatMessage, action_json_schema
from sotopia_pi.runner import EpisodeError, EpisodeRunner, EpisodeSetup, new_episode
from sotopia_pi.store import Store

from .factories import action, seed_store
from .lora_files import write_garbage, write_lora, write_truncated
from .servers import lora_chat_server

LLAMA_OPTIONS = {"n_ctx": 2048, "n_threads": 1}
MAX_TOKENS = 24
QUESTION = [
    ChatMessage(role="system", content="You are Tomas, a graduate student buying a used bike."),
    ChatMessage(role="user", content="Ines: It is a good bike. Two hundred and fifty dollars, firm."),
]


def greedy(backend, messages: list[ChatMessage]) -> str:
    """The backend's greedy, schema-constrained answer, computed from an empty KV cache."""
    if isinstance(backend, LlamaCppBackend):
        backend.reset_cache()
    return backend.complete(messages, schema=action_json_schema(), max_tokens=MAX_TOKENS, temperature=0).text


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("loras")
    write_lora(directory / "good.gguf", seed=1)
    write_lora(directory / "other.gguf", seed=2, targets=("attn_output",))
    return directory


@pytest.fixture(scope="module")
def reference():
    """A base model that is never swapped: what the base answers."""
    with create_backend("embedded", **LLAMA_OPTIONS) as backend:
        yield backend


# -- backends --------------------------------------------------------------------------------------


def test_backends_say_whether_they_swap_adapters(reference):
    assert isinstance(reference, AdapterSwapping)
    assert reference.spec == ModelSpec(kind="embedded") and reference.adapter is None
    with lora_chat_server() as server:
        remote = create_backend(f"openai:base@{server.url}")
        assert isinstance(remote, AdapterSwapping)
        assert remote.spec.target == "base" and remote.adapter is None
        remote.close()
    assert not isinstance(ReplayBackend(["x"]), AdapterSwapping)
    assert not isinstance(HumanBackend(), AdapterSwapping)
    assert ReplayBackend(["x"], name="replay:canned.json").spec == ModelSpec(kind="replay", target="canned.json")
    assert HumanBackend().spec.is_human


def test_llama_swap_changes_the_answer_and_the_base_comes_back_exactly(reference, lora_dir: Path):
    good, other = lora_dir / "good.gguf", lora_dir / "other.gguf"
    base = greedy(reference, QUESTION)
    with create_backend("embedded", **LLAMA_OPTIONS) as agent:
        assert greedy(agent, QUESTION) == base
        agent.set_adapter(good)
        assert agent.adapter == good
        assert agent.name == f"embedded+adapter={good}" and agent.spec.adapter == str(good)
        with_good = greedy(agent, QUESTION)
        assert with_good != base
        agent.set_adapter(other)
        assert agent.name == f"embedded+adapter={other}"
        assert greedy(agent, QUESTION) not in (base, with_good)
        agent.set_adapter(None)
        assert agent.name == "embedded" and agent.adapter is None
        assert greedy(agent, QUESTION) == base


@pytest.mark.parametrize(
    ("make_bad", "reason"),
    [
        (lambda d: write_garbage(d / "garbage.gguf"), "is not a GGUF file"),
        (lambda d: write_truncated(d / "truncated.gguf", write_lora(d / "whole.gguf", seed=5)), "is not a GGUF file"),
        (lambda d: write_lora(d / "wrong-shapes.gguf", wrong_shapes=True), "incorrect shape"),
        (lambda d: write_lora(d / "qwen.gguf", arch="qwen2"), "adapter for 'qwen2' models"),
    ],
    ids=["garbage", "truncated", "wrong-shapes", "other-architecture"],
)
def test_a_bad_adapter_is_refused_and_the_previous_one_keeps_answering(
    reference, lora_dir: Path, tmp_path: Path, make_bad, reason: str
):
    good = lora_dir / "good.gguf"
    bad = make_bad(tmp_path)
    with create_backend(f"embedded+adapter={good}", **LLAMA_OPTIONS) as agent:
        before = greedy(agent, QUESTION)
        assert before != greedy(reference, QUESTION)
        with pytest.raises(BackendError, match=reason):
            agent.set_adapter(bad)
        assert agent.adapter == good and agent.name == f"embedded+adapter={good}"
        assert greedy(agent, QUESTION) == before
    with pytest.raises(BackendError, match=reason):
        create_backend(f"embedded+adapter={bad}", **LLAMA_OPTIONS)


# -- the runner, on the embedded model --------------------------------------------------------------


class CountingFactory:
    """create_backend with fast options, counting the models it loads."""

    def __init__(self, **options) -> None:
        self.options = options
        self.loaded: list[str] = []

    def __call__(self, name, **options):
        self.loaded.append(str(name))
        return create_backend(name, **{**options, **self.options})


def embedded_runner(store: Store, factory) -> EpisodeRunner:
    """Ines (side 0) keeps repeating her price from a script; Tomas (side 1) is the embedded model."""
    seed_store(store)
    setup = EpisodeSetup(
        scenario_id="bike-sale",
        agent_ids=("ines", "tomas"),
        agent_models=("replay:ines", "embedded-base"),
        judge_model="",
        live_eval=False,
        max_turns=10,
        temperature=0.0,
        max_tokens=MAX_TOKENS,
    )
    ines = ReplayBackend([action("speak", "Two hundred and fifty, firm.")] * 5, name="replay:ines")
    return EpisodeRunner(store, new_episode(store, setup).id, backends={0: ines}, backend_factory=factory)


def test_runner_swaps_in_place_and_turns_record_the_adapter(store: Store, reference, lora_dir: Path):
    good = lora_dir / "good.gguf"
    factory = CountingFactory(**LLAMA_OPTIONS)
    runner = embedded_runner(store, factory)
    try:
        runner.step()
        base_turn = runner.step()
        assert base_turn.raw_output == greedy(reference, base_turn.prompt)
        assert factory.loaded == ["embedded-base"]

        runner.set_adapter(1, str(good))
        assert store.episode(runner.episode.id).agent_models == ["replay:ines", f"embedded-base+adapter={good}"]
        with pytest.raises(BackendError, match="is not a GGUF file"):
            runner.set_adapter(1, str(write_garbage(lora_dir / "junk.gguf")))
        assert store.episode(runner.episode.id).agent_models[1] == f"embedded-base+adapter={good}"

        runner.step()
        adapted = runner.step()
        assert adapted.model == f"embedded-base+adapter={good}"
        assert adapted.raw_output != greedy(reference, adapted.prompt)  # the adapter answered

        runner.set_adapter(1, None)
        runner.step()
        restored = runner.step()
        assert restored.agent == 1 and restored.model == "embedded-base"
        assert restored.raw_output == greedy(reference, restored.prompt)
        assert factory.loaded == ["embedded-base"]  # every swap was in place
        assert [t.model for t in store.turns(runner.episode.id)][1::2] == [
            "embedded-base", f"embedded-base+adapter={good}", "embedded-base"
        ]
        assert store.episode(runner.episode.id).agent_models == ["replay:ines", "embedded-base"]
    finally:
        runner.close()


# -- the runner's rules, on scripted backends --------------------------------------------------------


class GatedSwapper:
    """An AdapterSwapping backend whose answers wait for `release` and name the adapter in use
    when generation started and when it ended. Its set_adapter takes no lock of its own: the
    runner alone must keep swaps out of a turn in progress."""

    def __init__(self, name: str = "replay:gated") -> None:
        self.spec = ModelSpec(kind="replay", target=name.removeprefix("replay:"))
        self.generating = threading.Event()
        self.release = threading.Event()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def adapter(self) -> str | None:
        return self.spec.adapter

    def set_adapter(self, adapter) -> None:
        self.spec = self.spec.with_adapter(adapter)

    def complete(self, messages, **options) -> Completion:
        at_start = self.adapter
        self.generating.set()
        assert self.release.wait(10)
        return Completion(text=action("speak", f"{at_start} -> {self.adapter}"))

    def close(self) -> None:
        pass


def scripted_runner(store: Store, backends: dict, models=("replay:gated", "replay:b"), factory=None) -> EpisodeRunner:
    seed_store(store)
    setup = EpisodeSetup(
        scenario_id="bike-sale", agent_ids=("ines", "tomas"), agent_models=models, judge_model="", live_eval=False
    )
    options = {"backend_factory": factory} if factory else {}
    return EpisodeRunner(store, new_episode(store, setup).id, backends=backends, **options)


def test_a_swap_during_generation_waits_and_applies_from_the_next_turn(store: Store):
    gated = GatedSwapper()
    other = ReplayBackend([action("speak", "fine")], name="replay:b")
    runner = scripted_runner(store, {0: gated, 1: other})
    playing = threading.Thread(target=runner.step)
    playing.start()
    assert gated.generating.wait(10)
    swapping = threading.Thread(target=runner.set_adapter, args=(0, "/adapters/a"))
    swapping.start()
    time.sleep(0.3)
    assert swapping.is_alive() and gated.adapter is None  # held back while side 1 generates
    gated.release.set()
    playing.join(10)
    swapping.join(10)
    first = store.turns(runner.episode.id)[0]
    assert (first.model, json.loads(first.raw_output)["argument"]) == ("replay:gated", "None -> None")
    runner.step()
    third = runner.step()
    assert third.model == "replay:gated+adapter=/adapters/a"
    assert json.loads(third.raw_output)["argument"] == "/adapters/a -> /adapters/a"


def test_a_swap_for_the_other_side_does_not_wait(store: Store):
    gated = GatedSwapper()
    other = GatedSwapper("replay:b")
    other.release.set()
    runner = scripted_runner(store, {0: gated, 1: other})
    playing = threading.Thread(target=runner.step)
    playing.start()
    assert gated.generating.wait(10)
    runner.set_adapter(1, "/adapters/b")  # returns at once although side 1 is generating
    assert other.adapter == "/adapters/b"
    gated.release.set()
    playing.join(10)


def test_a_backend_that_cannot_swap_is_reloaded_with_the_adapter(store: Store):
    loads: list[str] = []

    def factory(name, **options):
        loads.append(name)
        if "broken" in name:
            raise BackendError(f"{name}: cannot load")
        return ReplayBackend([action("speak", name)] * 3, name=name)

    first = ReplayBackend([action("speak", "before")] * 3, name="replay:a")
    runner = scripted_runner(store, {0: first, 1: ReplayBackend([action("speak", "b")] * 3, "replay:b")},
                             models=("replay:a", "replay:b"), factory=factory)  # fmt: skip
    with pytest.raises(BackendError, match="cannot load"):
        runner.set_adapter(0, "broken")
    assert store.episode(runner.episode.id).agent_models[0] == "replay:a"
    assert runner.step().model == "replay:a"  # still the old backend
    runner.set_adapter(0, "/adapters/x")
    assert loads == ["replay:a+adapter=broken", "replay:a+adapter=/adapters/x"]
    runner.step()
    turn = runner.step()
    assert turn.model == "replay:a+adapter=/adapters/x"
    assert json.loads(turn.raw_output)["argument"] == "replay:a+adapter=/adapters/x"


def test_a_side_played_by_a_person_has_no_adapter(store: Store):
    runner = scripted_runner(store, {1: ReplayBackend([action("speak", "b")])}, models=("human", "replay:b"))
    with pytest.raises(EpisodeError, match="played by a person"):
        runner.set_adapter(0, "/adapters/x")


# -- OpenAI-compatible servers with vLLM's runtime LoRA endpoints -----------------------------------


def answered_model(backend) -> str:
    """The model the fake server was asked for (it answers with that name)."""
    reply = backend.complete([ChatMessage(role="user", content="hi")], on_token=lambda piece: None)
    return json.loads(reply.text)["argument"]


def test_openai_agent_swaps_to_a_peft_adapter_and_back(tmp_path: Path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with lora_chat_server() as server:
        backend = create_backend(f"openai:base@{server.url}")
        assert answered_model(backend) == "base"

        backend.set_adapter(first)
        (first_name,) = server.loaded
        assert server.loaded[first_name] == str(first)
        assert answered_model(backend) == first_name
        assert backend.name == f"openai:base@{server.url}+adapter={first}" and backend.adapter == str(first)

        backend.set_adapter(second)
        (second_name,) = server.loaded  # the first one was unloaded
        assert second_name != first_name and server.loaded[second_name] == str(second)
        assert answered_model(backend) == second_name

        backend.set_adapter(None)
        assert server.loaded == {} and answered_model(backend) == "base"
        assert backend.name == f"openai:base@{server.url}"
        backend.close()


def test_openai_refusals_keep_the_current_model(tmp_path: Path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    with lora_chat_server() as server:
        backend = create_backend(f"openai:base@{server.url}+adapter={adapter}")
        (loaded,) = server.loaded
        with pytest.raises(BackendError, match="HTTP 404.*No adapter found for /nowhere"):
            backend.set_adapter("/nowhere")
        assert answered_model(backend) == loaded and backend.adapter == str(adapter)
        backend.close()
        assert server.loaded == {}  # closing unloads what the backend loaded
    with lora_chat_server(dynamic_lora=False) as server:
        backend = create_backend(f"openai:base@{server.url}")
        with pytest.raises(BackendError, match=r"has no /load_lora_adapter endpoint \(HTTP 404\).*--enable-lora"):
            backend.set_adapter(adapter)
        assert answered_model(backend) == "base" and backend.name == f"openai:base@{server.url}"
        with pytest.raises(BackendError, match="has no /load_lora_adapter endpoint"):
            create_backend(f"openai:base@{server.url}+adapter={adapter}")


def test_runner_swaps_an_openai_agent_in_place(store: Store, tmp_path: Path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    with lora_chat_server() as server:
        model = f"openai:base@{server.url}"
        factory = CountingFactory()
        seed_store(store)
        setup = EpisodeSetup(
            scenario_id="bike-sale", agent_ids=("ines", "tomas"), agent_models=(model, model),
            judge_model="", live_eval=False,
        )  # fmt: skip
        runner = EpisodeRunner(store, new_episode(store, setup).id, backend_factory=factory)
        try:
            runner.load_models()
            assert runner.step().argument == "base"
            runner.set_adapter(1, str(adapter))
            turn = runner.step()
            (lora_name,) = server.loaded
            assert (turn.model, turn.argument) == (f"{model}+adapter={adapter}", lora_name)
            assert factory.loaded == [model, model]
        finally:
            runner.close()
        assert server.loaded == {}
