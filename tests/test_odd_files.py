"""Small inputs that used to crash: a SOTOPIA_PI_PRESETS that is not JSON, invalid UTF-8 or a
byte-order mark in the catalog and in dimension sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from sotopia_pi import config, paths
from sotopia_pi.catalog import CatalogError, load_catalog
from sotopia_pi.judge import DimensionSetError, load_dimension_set


@pytest.mark.parametrize("value", ["[{bad", "not json", '{"name": 1}', "[" * 5000], ids=["cut", "prose", "shape", "deep"])
def test_presets_that_are_not_json_fall_back_to_the_defaults_with_a_message(monkeypatch, value):
    monkeypatch.setenv("SOTOPIA_PI_PRESETS", value)
    settings, error = config.load_or_default()
    assert error and "presets" in error.lower()
    assert [p.model for p in settings.model_choices()] == ["embedded"]


def test_the_tui_starts_with_bad_presets(monkeypatch):
    monkeypatch.setenv("SOTOPIA_PI_PRESETS", "[{bad")
    from tui.app import make_app

    app = make_app()
    assert any("SOTOPIA_PI_PRESETS" in error for error in app.startup_errors)


def test_catalog_with_a_byte_order_mark_loads_and_invalid_utf8_is_a_clear_error(tmp_path: Path):
    catalog = tmp_path / "catalog.toml"
    catalog.write_bytes(b"\xef\xbb\xbf" + paths.catalog_path().read_bytes())
    assert load_catalog(catalog).models
    catalog.write_bytes(paths.catalog_path().read_bytes() + b"\n# \xff\xfe\n")
    with pytest.raises(CatalogError, match="not UTF-8"):
        load_catalog(catalog)
    catalog.write_text("big = " + "9" * 5000 + "\n")
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(catalog)


def test_dimension_sets_with_a_byte_order_mark_or_invalid_utf8(tmp_path: Path):
    builtin = paths.library_dir() / "dimensions" / "sotopia.toml"
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + builtin.read_bytes())
    assert load_dimension_set(str(bom)).name == load_dimension_set("sotopia").name
    broken = tmp_path / "broken.toml"
    broken.write_bytes(builtin.read_bytes() + b"\n# \xff\n")
    with pytest.raises(DimensionSetError, match="not UTF-8"):
        load_dimension_set(str(broken))
