"""`embedded` as an episode stores it: the embedded model with the adapter shipped for its role."""

from __future__ import annotations

import pytest

from sotopia_pi import paths
from sotopia_pi.backends import ModelSpec, parse_model_name, preset_for, resolve_adapter


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    (tmp_path / "models" / "adapters").mkdir(parents=True)
    return tmp_path / "models" / "adapters"


def test_without_shipped_adapters_embedded_is_the_bare_model(repo):
    assert preset_for("embedded") == "embedded-base"
    assert preset_for("embedded", "judge") == "embedded-base"


def test_shipped_adapters_are_written_out_per_role(repo):
    (repo / "embedded-bc.gguf").write_bytes(b"GGUF")
    (repo / "embedded-judge.gguf").write_bytes(b"GGUF")
    assert preset_for("embedded") == "embedded-base+adapter=embedded-bc"
    assert preset_for("embedded", "judge") == "embedded-base+adapter=embedded-judge"
    assert preset_for("embedded+adapter=mine@v2") == "embedded-base+adapter=mine@v2"
    for kept in ("embedded-base", "gguf:/m.gguf", "openai:q@http://x/v1", "human", "replay:f.json"):
        assert preset_for(kept) == kept
    resolved = resolve_adapter(parse_model_name(preset_for("embedded")))
    assert resolved == ModelSpec(kind="embedded-base", adapter=str(repo / "embedded-bc.gguf"))


def test_embedded_base_takes_no_argument():
    from sotopia_pi.backends import ModelNameError

    assert parse_model_name("embedded-base").kind == "embedded-base"
    with pytest.raises(ModelNameError):
        parse_model_name("embedded-base:x")
