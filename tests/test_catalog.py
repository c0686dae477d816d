"""The model catalog: validation, `pull` against real loopback HTTP servers, and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sotopia_pi import paths
from sotopia_pi.backends import BackendError, create_backend
from sotopia_pi.catalog import (
    CatalogError,
    DownloadInterrupted,
    is_pulled,
    load_catalog,
    local_path,
    pull,
    require_pulled,
)
from sotopia_pi.cli import app
from sotopia_pi.episode import ChatMessage
from tests.servers import file_server

FILE_SIZE = 3 * 1024 * 1024 + 17


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A fake GGUF (right magic, random body) in a folder that the file server serves."""
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "tiny.gguf").write_bytes(b"GGUF" + os.urandom(FILE_SIZE - 4))
    (folder / "page.gguf").write_bytes(b"<html>rate limited</html>")
    return folder


def write_catalog(path: Path, url: str, **fields) -> Path:
    entry = {"kind": "gguf", "description": "a test model", "url": url, "license": "MIT", **fields}
    lines = ['default = "tiny"', "", "[models.tiny]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in entry.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def use_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a one-model catalog and point SOTOPIA_PI_CATALOG at it."""

    def make(url: str, **fields) -> Path:
        path = write_catalog(tmp_path / "catalog.toml", url, **fields)
        monkeypatch.setenv("SOTOPIA_PI_CATALOG", str(path))
        return path

    return make


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the shipped catalog ------------------------------------------------------------------------


def test_shipped_catalog_is_valid_and_defaults_to_the_embedded_model():
    catalog = load_catalog()
    assert catalog.models[catalog.default].kind == "embedded"
    kinds = {entry.kind for entry in catalog.models.values()}
    assert kinds == {"embedded", "gguf", "api"}
    downloadable = [entry for entry in catalog.models.values() if entry.kind == "gguf"]
    assert 3 <= len(downloadable) <= 5
    for entry in downloadable:
        assert entry.url.startswith("https://") and entry.filename.endswith(".gguf") and entry.license
    assert is_pulled(catalog.default)
    assert local_path(catalog.default).name == "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('default = "a"\n[models.a]\nkind = "gguf"\ndescription = "x"\nlicense = "MIT"\n', "models.a: a gguf entry needs an http(s) `url`"),
        ('default = "a"\n[models.a]\nkind = "embedded"\ndescription = "x"\nsizee = 3\n', "models.a: sizee: Extra inputs are not permitted"),
        ('default = "b"\n[models.a]\nkind = "embedded"\ndescription = "x"\n', "default 'b' is not one of the models"),
        (
            'default = "a"\n[models.a]\nkind = "api"\ndescription = "x"\nspec = "gguf:/x"\n',
            "models.a: an api entry's spec must start with openai:",
        ),
        (
            'default = "a"\n[models.a]\nkind = "gguf"\ndescription = "x"\nlicense = "MIT"\n'
            'url = "https://h/x.gguf"\nsha256 = "abc"\n',
            "sha256 must be 64 hexadecimal digits",
        ),
        ('default = "a"\n[models.a\nkind = "embedded"\n', "not valid TOML"),
    ],
)
def test_bad_catalogs_name_the_file_the_model_and_the_field(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CatalogError) as raised:
        load_catalog(path)
    assert str(path) in str(raised.value)
    assert expected in str(raised.value)


def test_toml_syntax_errors_give_the_line(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text('default = "a"\n\n[models.a\n', encoding="utf-8")
    with pytest.raises(CatalogError, match=r"line 3"):
        load_catalog(path)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(CatalogError, match="known: .*smollm2-135m"):
        load_catalog().get("no-such-model")


# -- pull -----------------------------------------------------------------------------------------


def test_pull_downloads_verifies_and_reports_progress(served: Path, use_catalog):
    expected = served / "tiny.gguf"
    with file_server(served) as base:
        use_catalog(f"{base}/tiny.gguf", size_bytes=FILE_SIZE, sha256=digest(expected))
        assert not is_pulled("tiny")
        seen: list[tuple[int, int | None]] = []
        path = pull("tiny", progress=lambda done, total: seen.append((done, total)))
    assert path == paths.models_dir() / "tiny.gguf"
    assert path.read_bytes() == expected.read_bytes()
    assert is_pulled("tiny") and require_pulled("tiny") == path
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[-1] == (FILE_SIZE, FILE_SIZE)
    assert not list(paths.models_dir().glob("*.part"))


def test_checksum_mismatch_keeps_nothing(served: Path, use_catalog):
    with file_server(served) as base:
        use_catalog(f"{base}/tiny.gguf", sha256="0" * 64)
        with pytest.raises(CatalogError, match="sha256 is [0-9a-f]{64}, the catalog says 0{64}; nothing was kept"):
            pull("tiny")
    assert list(paths.models_dir().iterdir()) == []


def test_size_mismatch_keeps_nothing(served: Path, use_catalog):
    with file_server(served) as base:
        use_catalog(f"{base}/tiny.gguf", size_bytes=FILE_SIZE + 1)
        with pytest.raises(CatalogError, match=f"size is {FILE_SIZE} bytes, the catalog says {FILE_SIZE + 1}"):
            pull("tiny")
    assert list(paths.models_dir().iterdir()) == []


def test_a_file_that_is_not_gguf_is_rejected(served: Path, use_catalog):
    with file_server(served) as base:
        use_catalog(f"{base}/page.gguf")
        with pytest.raises(CatalogError, match="not a GGUF file"):
            pull("tiny")
    assert list(paths.models_dir().iterdir()) == []


def test_http_errors_are_reported_with_the_url(served: Path, use_catalog):
    with file_server(served) as base:
        use_catalog(f"{base}/missing.gguf")
        with pytest.raises(CatalogError, match=f"{base}/missing.gguf answered HTTP 404"):
            pull("tiny")
    assert not (paths.models_dir() / "missing.gguf").exists()


def test_refused_connection_is_an_interruption_not_a_file(use_catalog):
    from tests.servers import free_port

    use_catalog(f"http://127.0.0.1:{free_port()}/tiny.gguf")
    with pytest.raises(DownloadInterrupted, match="run `sotopia-pi models pull tiny` again"):
        pull("tiny", timeout=5)
    assert not (paths.models_dir() / "tiny.gguf").exists()


def test_interrupted_download_leaves_no_final_file_and_resumes(served: Path, use_catalog):
    expected = served / "tiny.gguf"
    cut = 1024 * 1024 + 3
    with file_server(served, cut_after=cut) as base:
        use_catalog(f"{base}/tiny.gguf", size_bytes=FILE_SIZE, sha256=digest(expected))
        with pytest.raises(DownloadInterrupted) as raised:
            pull("tiny")
    final = paths.models_dir() / "tiny.gguf"
    part = paths.models_dir() / "tiny.gguf.part"
    assert not final.exists()
    kept = part.stat().st_size
    assert 0 < kept <= cut  # whole chunks only: bytes of a chunk cut short are fetched again
    assert f"stopped after {kept} bytes" in str(raised.value)
    assert part.read_bytes() == expected.read_bytes()[:kept]

    seen: list[int] = []
    with file_server(served) as base:
        use_catalog(f"{base}/tiny.gguf", size_bytes=FILE_SIZE, sha256=digest(expected))
        pull("tiny", progress=lambda done, total: seen.append(done))
    assert seen[0] > kept  # it went on from where it stopped
    assert final.read_bytes() == expected.read_bytes()
    assert not part.exists()


def test_resume_against_a_server_without_ranges_starts_over(served: Path, use_catalog):
    expected = served / "tiny.gguf"
    part = paths.models_dir() / "tiny.gguf.part"
    part.write_bytes(b"GGUF-stale-bytes-from-another-file")
    with file_server(served, supports_range=False) as base:
        use_catalog(f"{base}/tiny.gguf", sha256=digest(expected))
        path = pull("tiny")
    assert path.read_bytes() == expected.read_bytes()


def test_catalog_model_loads_in_llama_cpp_once_pulled(use_catalog):
    """End to end: serve the real embedded GGUF, pull it as a catalog model, chat with it."""
    embedded = load_catalog(paths.catalog_path()).models["smollm2-135m"]
    source = local_path(embedded.name, load_catalog(paths.catalog_path()))
    with file_server(source.parent) as base:
        use_catalog(f"{base}/{source.name}", size_bytes=source.stat().st_size, filename="copy.gguf")
        with pytest.raises(BackendError, match="run `sotopia-pi models pull tiny`"):
            create_backend("catalog:tiny")
        pull("tiny")
    with create_backend("catalog:tiny", n_threads=1, n_ctx=512) as backend:
        reply = backend.complete([ChatMessage(role="user", content="Hello!")], max_tokens=5, temperature=0)
    assert reply.completion_tokens > 0 and reply.text


# -- CLI ------------------------------------------------------------------------------------------


def test_cli_list_shows_default_and_pulled_state(served: Path, use_catalog):
    runner = CliRunner()
    with file_server(served) as base:
        use_catalog(f"{base}/tiny.gguf", size_bytes=FILE_SIZE)
        before = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
        pulled = runner.invoke(app, ["models", "pull", "tiny"])
        after = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert pulled.exit_code == 0, pulled.output
    assert pulled.stdout.strip() == str(paths.models_dir() / "tiny.gguf")
    assert before["default"] == "tiny"
    assert [(m["name"], m["default"], m["pulled"]) for m in before["models"]] == [("tiny", True, False)]
    assert after["models"][0]["pulled"] is True
    assert after["models"][0]["model_name"] == "catalog:tiny"


def test_cli_pull_failure_is_a_clear_error(use_catalog):
    use_catalog("http://127.0.0.1:9/tiny.gguf")
    result = CliRunner().invoke(app, ["models", "pull", "nope"])
    assert result.exit_code == 1
    assert "no model named 'nope'" in result.stderr
