"""User settings: defaults, the TOML file, environment overrides, clear errors."""

from __future__ import annotations

import pytest

from sotopia_pi import config
from sotopia_pi.config import ConfigError, ModelPreset, Settings


def test_defaults_need_no_file_and_use_the_embedded_model():
    settings = config.load()
    assert not config.config_path().exists()
    assert settings.agent_models == ("embedded", "embedded")
    assert settings.judge_model == "embedded"
    assert settings.live_eval is True
    assert settings.max_turns == 20
    assert [p.model for p in settings.model_choices()] == ["embedded"]


def test_save_then_load_round_trips_through_the_config_dir(isolated_home):
    settings = config.load()
    settings.max_turns = 8
    settings.live_eval = False
    settings.agent2_model = "openai:qwen@http://127.0.0.1:8000/v1"
    settings.presets = [ModelPreset(name="local qwen", model="openai:qwen@http://127.0.0.1:8000/v1")]
    path = config.save(settings)
    assert path == isolated_home / "config" / "config.toml"
    again = config.load()
    assert again == settings
    # the embedded model stays offered even when the presets leave it out
    assert [p.model for p in again.model_choices()] == ["embedded", "openai:qwen@http://127.0.0.1:8000/v1"]


def test_environment_overrides_the_file(monkeypatch):
    settings = Settings(max_turns=8)
    config.save(settings)
    monkeypatch.setenv("SOTOPIA_PI_MAX_TURNS", "3")
    monkeypatch.setenv("SOTOPIA_PI_LIVE_EVAL", "false")
    loaded = config.load()
    assert loaded.max_turns == 3
    assert loaded.live_eval is False
    assert config.env_overrides() == {
        "max_turns": "SOTOPIA_PI_MAX_TURNS",
        "live_eval": "SOTOPIA_PI_LIVE_EVAL",
    }


def test_bad_toml_names_the_file_and_line_and_keeps_the_file():
    path = config.config_path()
    path.write_text('max_turns = 5\njudge_model = "embedded\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        config.load()
    assert str(path) in str(caught.value)
    assert "line 2" in str(caught.value)
    settings, error = config.load_or_default()
    assert settings.max_turns == 20 and error == str(caught.value)
    assert path.read_text(encoding="utf-8").startswith("max_turns = 5")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("max_turns = 0\n", "max_turns"),
        ('agent1_model = "gpt4"\n', "agent1_model"),
        ('judge_model = "human"\n', "judge_model"),
        ('max_turn = 5\n', "max_turn"),
        ('[[presets]]\nname = "x"\nmodel = "gguf:"\n', "presets.0.model"),
    ],
)
def test_bad_values_name_the_field(text, field):
    config.config_path().write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=f"field {field}:"):
        config.load()


def test_empty_judge_means_no_judge():
    assert Settings(judge_model="").judge_model == ""


# -- saving writes only what the user chose --------------------------------------------------


def test_save_leaves_defaults_out_of_the_file():
    settings = config.load()
    settings.max_turns = 8
    config.save(settings)
    assert config.read_file() == {"max_turns": 8}
    settings.max_turns = 20  # back to the default: the field leaves the file
    config.save(settings)
    assert config.read_file() == {}


def test_save_does_not_write_environment_overrides(monkeypatch):
    config.save(Settings(max_turns=8, judge_model=""))
    monkeypatch.setenv("SOTOPIA_PI_MAX_TURNS", "3")
    settings = config.load()
    assert settings.max_turns == 3
    settings.live_eval = False
    config.save(settings)
    assert config.read_file() == {"max_turns": 8, "judge_model": "", "live_eval": False}
    monkeypatch.delenv("SOTOPIA_PI_MAX_TURNS")
    assert config.load().max_turns == 8


def test_save_writes_a_change_made_over_an_environment_value(monkeypatch):
    monkeypatch.setenv("SOTOPIA_PI_MAX_TURNS", "3")
    settings = config.load()
    settings.max_turns = 12
    config.save(settings)
    assert config.read_file() == {"max_turns": 12}


def test_save_replaces_an_unreadable_file():
    config.config_path().write_text("max_turns = [\n", encoding="utf-8")
    config.save(Settings(live_eval=False))
    assert config.read_file() == {"live_eval": False}
