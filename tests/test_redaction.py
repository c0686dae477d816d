"""Secrets never reach the store, the screen or an export: the key in use and anything shaped
like a bearer token or an sk- key are redacted from every error text."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sotopia_pi.backends import BackendError
from sotopia_pi.cli import app
from sotopia_pi.redaction import MASK, redact, register_secret

from .factories import action, seed_store
from .servers import scripted_chat_server

KEY = "sk-test-Zq81hJ5sLw02xYpA9dE3"
ODD_KEY = "plainkey-without-any-shape-7731"


@pytest.mark.parametrize(
    "text",
    [
        f"Incorrect API key provided: {KEY}",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
        'upstream said {"api_key": "abcdef123456"}',
        "token=ghp_abcdefghijklmnopqrstuvwxyz012345 rejected",
        "url https://host/v1?access_token=AbC123xYz789 failed",
    ],
)
def test_shapes_of_secrets_are_redacted(text):
    cleaned = redact(text)
    assert MASK in cleaned
    for secret in (KEY, "eyJhbGciOiJIUzI1NiJ9", "abcdef123456", "ghp_abcdefghij", "AbC123xYz789"):
        assert secret not in cleaned


def test_a_registered_key_of_any_shape_is_redacted_and_backend_errors_carry_none():
    register_secret(ODD_KEY)
    assert ODD_KEY not in redact(f"server echoed {ODD_KEY}!")
    assert ODD_KEY not in str(BackendError(f"401: bad key {ODD_KEY}"))


def test_plain_text_is_left_alone():
    text = "the judge gave no score for goal; 3 turns saved, see sotopia-pi resume 01J9"
    assert redact(text) == text


def test_an_echoed_key_is_stored_nowhere_and_shown_nowhere(store, tmp_path: Path, monkeypatch):
    seed_store(store)
    monkeypatch.setenv("SOTOPIA_PI_API_KEY", ODD_KEY + "-env")

    def echo_key(body: dict, headers: dict):
        return 401, {"error": {"message": f"Invalid key {headers.get('authorization')} (key {ODD_KEY}-env)"}}

    leave = tmp_path / "leave.json"
    leave.write_text(json.dumps([action("speak", "hi")]), encoding="utf-8")
    with scripted_chat_server(echo_key) as url:
        result = CliRunner().invoke(app, [
            "run", "--scenario", "bike_sale", "--agent1", f"replay:{leave}",
            "--agent2", f"openai:model@{url}", "--judge", "", "--json",
        ])
        shown = result.output
        run_id = None
        if result.exit_code == 2:
            run_id = json.loads(result.stdout)["id"]
        judged = CliRunner().invoke(app, [
            "run", "--scenario", "bike_sale", "--agent1", f"replay:{leave}", "--agent2", f"replay:{leave}",
            "--judge", f"openai:model@{url}", "--max-turns", "1", "--no-live-eval", "--json",
        ])
    assert result.exit_code in (1, 2), result.output
    assert judged.exit_code == 0, judged.output
    outputs = shown + judged.output
    if run_id:
        outputs += CliRunner().invoke(app, ["episodes", "show", run_id, "--json"]).output
    assert ODD_KEY not in outputs and "Bearer " + ODD_KEY not in outputs
    assert "judge model failed" in judged.output and MASK in judged.output
    dump = "\n".join(sqlite3.connect(store.path).iterdump())
    assert ODD_KEY not in dump
