"""The adapter registry: records, versions, files, export, the CLI and `+adapter=NAME`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sotopia_pi import paths
from sotopia_pi.adapters import (
    AdapterError,
    AdapterRecord,
    adapter_dir,
    base_model_digest,
    delete_adapter,
    export_adapter,
    file_digest,
    get_adapter,
    list_adapters,
    register_adapter,
)
from sotopia_pi.backends import BackendError, create_backend, parse_model_name, resolve_adapter
from sotopia_pi.catalog import embedded_model_path
from sotopia_pi.cli import app
from sotopia_pi.store import SCHEMA_VERSION, NotFound, Store
from sotopia_pi.training.convert import ConversionError

# SmolLM2-135M's projection shapes (out, in), for an adapter made without loading the model.
SMOL_LAYERS = 30
SMOL_SHAPES = {
    "self_attn.q_proj": (576, 576), "self_attn.k_proj": (192, 576), "self_attn.v_proj": (192, 576),
    "self_attn.o_proj": (576, 576), "mlp.gate_proj": (1536, 576), "mlp.up_proj": (1536, 576),
    "mlp.down_proj": (576, 1536),
}


def write_peft_adapter(directory: Path, *, layers: int = 2, shapes: dict = SMOL_SHAPES,
                       rank: int = 8, seed: int = 0, std: float = 0.05) -> Path:
    """A PEFT LoRA directory (config + safetensors) with random weights, as PEFT saves it
    (on the first `layers` blocks only: a valid adapter, and quick to convert)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(layers):
        for module, (n_out, n_in) in shapes.items():
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = (rng.standard_normal((rank, n_in)) / np.sqrt(n_in)).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = (rng.standard_normal((n_out, rank)) * std).astype(np.float32)
    directory.mkdir(parents=True)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 4 * rank, "lora_dropout": 0.0, "bias": "none",
              "target_modules": sorted(m.split(".")[1] for m in shapes), "task_type": "CAUSAL_LM"}
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


def record_for(peft_dir: Path, name: str = "mia", base: str = "embedded", **fields) -> AdapterRecord:
    return AdapterRecord(
        name=name, base_model=base, base_digest="b" * 64, snapshot="snap-1", snapshot_digest="s" * 64,
        hyperparameters={"r": 8, "lora_alpha": 32, "learning_rate": 5e-5},
        metrics={"train_loss": [2.1, 1.7], "heldout_loss_base": 2.4, "heldout_loss_adapter": 1.9},
        peft_dir=str(peft_dir), **fields,
    )


@pytest.fixture
def smol_adapter(tmp_path: Path) -> Path:
    return write_peft_adapter(tmp_path / "trained")


def cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})  # no folded table cells


# -- the registry -------------------------------------------------------------------------------


def test_store_migrates_to_the_adapters_table(store: Store):
    assert store.schema_version == SCHEMA_VERSION
    assert list_adapters(store) == []


def test_register_copies_files_converts_and_round_trips(store: Store, smol_adapter: Path):
    stored = register_adapter(store, record_for(smol_adapter))

    assert stored.version == 1 and stored.status == "ready"
    folder = adapter_dir("mia", 1)
    assert folder == paths.adapters_dir() / "mia" / "v1"
    assert Path(stored.peft_dir) == folder / "peft"
    assert sorted(p.name for p in (folder / "peft").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert file_digest(folder / "peft" / "adapter_model.safetensors") == file_digest(smol_adapter / "adapter_model.safetensors")
    import gguf

    reader = gguf.GGUFReader(stored.gguf_path)
    assert reader.fields["general.type"].contents() == "adapter"
    assert len(reader.tensors) == 2 * 7 * 2
    assert get_adapter(store, "mia") == stored
    assert get_adapter(store, "mia@v1") == stored
    assert list_adapters(store) == [stored]
    assert not list((paths.adapters_dir() / "mia").glob(".*"))  # no staging leftovers


def test_a_name_gets_a_new_version_each_time(store: Store, tmp_path: Path):
    first = register_adapter(store, record_for(write_peft_adapter(tmp_path / "a", seed=1)))
    second = register_adapter(store, record_for(write_peft_adapter(tmp_path / "b", seed=2)))
    other = register_adapter(store, record_for(write_peft_adapter(tmp_path / "c", seed=3), name="leo"))

    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert get_adapter(store, "mia") == second  # the newest
    assert get_adapter(store, "mia@v1") == first
    assert [r.reference for r in list_adapters(store)] == ["leo@v1", "mia@v1", "mia@v2"]
    assert file_digest(Path(first.gguf_path)) != file_digest(Path(second.gguf_path))
    with pytest.raises(NotFound, match="no adapter 'mia' version 3"):
        get_adapter(store, "mia@v3")


def test_registering_in_place_keeps_the_trainers_folder(store: Store, tmp_path: Path):
    target = adapter_dir("mia", store.next_adapter_version("mia")) / "peft"
    write_peft_adapter(target)
    stored = register_adapter(store, record_for(target))
    assert Path(stored.peft_dir) == target and target.is_dir()
    assert Path(stored.gguf_path).is_file()


def test_an_hf_base_without_gguf_gives_a_peft_only_adapter(store: Store, tmp_path: Path):
    peft_dir = write_peft_adapter(tmp_path / "tiny", layers=2, shapes={"self_attn.q_proj": (64, 64)})
    stored = register_adapter(store, record_for(peft_dir, base=f"hf:{tmp_path}"))
    assert stored.status == "peft-only" and stored.gguf_path is None


def test_delete_removes_records_and_files(store: Store, tmp_path: Path):
    first = register_adapter(store, record_for(write_peft_adapter(tmp_path / "a", seed=1)))
    second = register_adapter(store, record_for(write_peft_adapter(tmp_path / "b", seed=2)))

    assert [r.reference for r in delete_adapter(store, "mia@v1")] == ["mia@v1"]
    assert not Path(first.peft_dir).exists() and not Path(first.gguf_path).exists()
    assert Path(second.gguf_path).is_file()
    assert [r.reference for r in delete_adapter(store, "mia")] == ["mia@v2"]
    assert not (paths.adapters_dir() / "mia").exists()
    assert list_adapters(store) == []
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()  # the source was only copied
    with pytest.raises(NotFound):
        delete_adapter(store, "mia")


def test_export_copies_files_and_writes_provenance(store: Store, smol_adapter: Path, tmp_path: Path):
    stored = register_adapter(store, record_for(smol_adapter))
    out = export_adapter(store, "mia", tmp_path / "export")

    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["adapter"] == stored.model_dump(mode="json")
    assert set(provenance["files"]) == {"peft/adapter_config.json", "peft/adapter_model.safetensors", "adapter.gguf"}
    for relative, digest in provenance["files"].items():
        assert file_digest(out / relative) == digest
    assert file_digest(out / "adapter.gguf") == file_digest(Path(stored.gguf_path))
    with pytest.raises(AdapterError, match="not an empty folder"):
        export_adapter(store, "mia", out)


@pytest.mark.parametrize(
    ("spoil", "error", "message"),
    [
        (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 64), AdapterError, "not a safetensors file"),
        (lambda d: (d / "adapter_model.safetensors").unlink(), AdapterError, "adapter_model.safetensors is missing"),
        (lambda d: (d / "adapter_config.json").write_text("{oops"), AdapterError, "not valid JSON"),
        (lambda d: (d / "adapter_config.json").write_text('{"peft_type": "LORA"}'), AdapterError, "no rank"),
    ],
)
def test_a_corrupt_adapter_is_refused_and_leaves_nothing(store: Store, smol_adapter: Path, spoil, error, message: str):
    spoil(smol_adapter)
    with pytest.raises(error, match=message):
        register_adapter(store, record_for(smol_adapter))
    assert list_adapters(store) == []
    assert list(paths.adapters_dir().iterdir()) == []


def test_a_garbage_gguf_and_an_adapter_for_another_base_are_refused(store: Store, smol_adapter: Path, tmp_path: Path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\xff" * 200)
    with pytest.raises(AdapterError, match="not a GGUF file"):
        register_adapter(store, record_for(smol_adapter, gguf_path=str(junk)))
    narrow = write_peft_adapter(tmp_path / "narrow", shapes={"self_attn.q_proj": (512, 512)})
    with pytest.raises(ConversionError, match=r"layers\.0\.self_attn\.q_proj\.lora_A\.weight has shape .* another base model"):
        register_adapter(store, record_for(narrow))
    assert list_adapters(store) == []
    assert [p for p in paths.adapters_dir().rglob("*") if p.is_file()] == []


def test_bad_names_are_refused(store: Store, smol_adapter: Path):
    for name in ("", "../up", "a b", "-dash"):
        with pytest.raises((AdapterError, ValueError)):
            register_adapter(store, record_for(smol_adapter, name=name))
    with pytest.raises(AdapterError, match="NAME or NAME@vN"):
        get_adapter(store, "mia@version2")


def test_base_model_digest_is_the_gguf_sha256(tmp_path: Path):
    assert base_model_digest("embedded") == file_digest(embedded_model_path())
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    assert len(base_model_digest(f"hf:{tmp_path}")) == 64


# -- model names --------------------------------------------------------------------------------


def test_adapter_names_resolve_to_the_file_each_backend_needs(store: Store, smol_adapter: Path, tmp_path: Path):
    stored = register_adapter(store, record_for(smol_adapter))
    assert resolve_adapter(parse_model_name("embedded+adapter=mia")).adapter == stored.gguf_path
    assert resolve_adapter(parse_model_name("gguf:/m.gguf+adapter=mia@v1")).adapter == stored.gguf_path
    assert resolve_adapter(parse_model_name("hf:/m+adapter=mia")).adapter == stored.peft_dir
    existing = tmp_path / "mia"
    existing.mkdir()
    spec = parse_model_name(f"hf:/m+adapter={existing}")
    assert resolve_adapter(spec) == spec  # an existing path wins
    with pytest.raises(BackendError, match="'nobody' is neither an existing file or folder nor a registered adapter"):
        resolve_adapter(parse_model_name("embedded+adapter=nobody"))


def test_a_peft_only_adapter_cannot_serve_a_llama_cpp_model(store: Store, tmp_path: Path):
    peft_dir = write_peft_adapter(tmp_path / "tiny", layers=1, shapes={"self_attn.q_proj": (64, 64)})
    register_adapter(store, record_for(peft_dir, name="tiny", base=f"hf:{tmp_path}"))
    with pytest.raises(BackendError, match="tiny@v1 has no GGUF file"):
        resolve_adapter(parse_model_name("embedded+adapter=tiny"))


def test_the_embedded_model_runs_a_registered_adapter_by_name(store: Store, tmp_path: Path):
    stored = register_adapter(store, record_for(write_peft_adapter(tmp_path / "full", layers=SMOL_LAYERS)))
    question = [{"role": "user", "content": "What is the capital of France?"}]
    with create_backend("embedded", n_ctx=1024) as base:
        base_text = base.complete(question, max_tokens=12, temperature=0).text
    with create_backend("embedded+adapter=mia", n_ctx=1024) as adapted:
        assert str(adapted.adapter_path) == stored.gguf_path
        assert adapted.complete(question, max_tokens=12, temperature=0).text != base_text


# -- the command line ---------------------------------------------------------------------------


def test_cli_lists_shows_exports_and_deletes_as_json(store: Store, smol_adapter: Path, tmp_path: Path):
    register_adapter(store, record_for(smol_adapter))
    register_adapter(store, record_for(write_peft_adapter(tmp_path / "b", seed=5)))

    listed = json.loads(cli("adapters", "list", "--json").stdout)
    assert [(a["name"], a["version"], a["status"]) for a in listed["adapters"]] == [("mia", 1, "ready"), ("mia", 2, "ready")]
    shown = json.loads(cli("adapters", "show", "mia@v1", "--json").stdout)
    assert shown["metrics"]["heldout_loss_adapter"] == 1.9 and shown["snapshot"] == "snap-1"
    exported = json.loads(cli("adapters", "export", "mia", str(tmp_path / "out"), "--json").stdout)
    assert set(exported["files"]) == {"provenance.json", "adapter.gguf", "peft/adapter_config.json", "peft/adapter_model.safetensors"}
    deleted = json.loads(cli("adapters", "delete", "mia", "--json").stdout)
    assert deleted == {"deleted": ["mia@v1", "mia@v2"]}
    assert json.loads(cli("adapters", "list", "--json").stdout) == {"adapters": []}


def test_cli_text_output_and_clear_errors(store: Store, smol_adapter: Path):
    assert "No adapters yet" in cli("adapters", "list").stdout
    register_adapter(store, record_for(smol_adapter))
    listing = cli("adapters", "list")
    assert listing.exit_code == 0 and "mia@v1" in listing.stdout and "1.900 (base 2.400)" in listing.stdout
    missing = cli("adapters", "show", "ghost")
    assert missing.exit_code == 1 and "no adapter 'ghost'" in missing.stderr
    assert cli("adapters", "delete", "ghost@v2").exit_code == 1
