"""Secrets never reach the store, an export or the screen.

`redact` replaces, in any text about to be stored or shown (error texts above all: a server may
echo the request's key in its error body), every API key this process uses (registered with
`register_secret`, and those in the environment variables that carry keys) and anything shaped
like a bearer token, an OpenAI-style `sk-` key or a `key=value` credential.
"""

from __future__ import annotations

import os
import re
import threading

MASK = "[redacted]"
MIN_SECRET_CHARS = 6
SECRET_ENV_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD")

_PATTERNS = [
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{6,}"),
    re.compile(r"\b(?:hf|ghp|gho|ghs|github_pat|xox[abp])_[A-Za-z0-9_]{10,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(
        r"(?i)([\"']?\b(?:api[_-]?key|access[_-]?token|auth[_-]?token|secret|password|authorization)"
        r"[\"']?\s*[:=]\s*[\"']?)(?!\[redacted\])[^\s\"',;}&]{6,}"
    ),
]

_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a key this process uses, so that it is redacted wherever it turns up."""
    if value and len(value.strip()) >= MIN_SECRET_CHARS:
        with _lock:
            _registered.add(value.strip())


def known_secrets() -> list[str]:
    """The registered keys and those in the environment, longest first."""
    from_env = {
        value.strip()
        for name, value in os.environ.items()
        if name.upper().endswith(SECRET_ENV_SUFFIXES) and len(value.strip()) >= MIN_SECRET_CHARS
    }
    with _lock:
        return sorted(_registered | from_env, key=len, reverse=True)


def redact(text: str) -> str:
    """The text with every secret replaced by [redacted]."""
    if not text:
        return text
    for secret in known_secrets():
        text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(_masked, text)
    return text


def _masked(match: re.Match) -> str:
    prefix = match.group(1) if match.re.groups else ""
    if not prefix and match.group(0).lower().startswith("bearer"):
        prefix = match.group(0)[: len("bearer ")]
    return f"{prefix}{MASK}"


def redact_value(value):
    """A JSON-like value with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    return value
