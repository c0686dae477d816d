"""The one boundary where text from a model (or any outside source) enters the engine.

Whatever a model writes, the engine gets either a value or a clear reason why there is none:
`read_json` never raises, however deep, long or odd the input (json-repair's own errors,
recursion on deep nesting, numbers longer than Python converts, lone surrogates, control
characters). `clean_text` makes text safe to store (SQLite and JSON need valid UTF-8, so lone
surrogates become U+FFFD) and safe to show (terminal escape sequences and control characters
other than newline and tab are removed). `one_line` folds text onto one line for transcripts, so
a reply cannot start a line of its own and forge a "Turn #k:" entry in what the other agent or
the judge reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import json_repair

MAX_JSON_CHARS = 200_000
MAX_JSON_DEPTH = 64
MAX_INT_DIGITS = 300

_ESCAPE_SEQUENCES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, screen clears
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[@-Z\\-_]?"  # two-character escapes, and a lone ESC
)
# C0 controls but tab and newline, DEL, C1 controls, bidirectional overrides and isolates.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_WHITESPACE_RUN = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Text safe to store and to print: valid UTF-8, no terminal escapes, no stray controls."""
    if not text:
        return text
    text = _SURROGATE.sub("\ufffd", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _ESCAPE_SEQUENCES.sub("", text)
    return _CONTROL.sub("", text)


def one_line(text: str) -> str:
    """The text with every run of whitespace (newlines included) folded into one space."""
    return clean_text(_WHITESPACE_RUN.sub(" ", text)).strip()


def clean_value(value: Any) -> Any:
    """A parsed JSON value with every string (keys too) passed through `clean_text`."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(key)): clean_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clean_value(item) for item in value]
    return value


def lone_surrogate_at(value: Any, path: str = "") -> str | None:
    """The path (`field[2].name`) of the first string in a JSON value, key or item, that holds a
    lone surrogate (text that cannot be written as UTF-8); None if there is none."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _SURROGATE.search(str(key)):
                return where
            found = lone_surrogate_at(item, where)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = lone_surrogate_at(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


@dataclass(frozen=True)
class JsonRead:
    """What `read_json` made of a text: the value, or None and the reason (`problem`)."""

    value: Any = None
    problem: str = ""
    repaired: bool = False


def nesting_depth(text: str) -> int:
    """How deep brackets nest in text, outside JSON strings (a cheap scan, no parsing)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def _bounded_int(digits: str) -> int | float:
    """Integers longer than MAX_INT_DIGITS read as infinities: Python refuses very long ones."""
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        return float("-inf") if digits.startswith("-") else float("inf")
    return int(digits)


def read_json(text: str, *, repair: bool = True, clean: bool = True, max_chars: int = MAX_JSON_CHARS) -> JsonRead:
    """Parse JSON from model text (repairing what small models get wrong when `repair`).

    Never raises. Too long or too deep a text is refused before parsing; any error of the
    parser or the repairer becomes the `problem`. Strings in the value are `clean_text`ed
    unless `clean` is False (an importer that reports odd text rather than mending it).
    """
    tidy = clean_value if clean else (lambda value: value)
    if not isinstance(text, str):
        return JsonRead(problem=f"expected text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        return JsonRead(problem="empty text")
    if len(stripped) > max_chars:
        return JsonRead(problem=f"text of {len(stripped)} characters is longer than {max_chars}")
    depth = nesting_depth(stripped)
    if depth > MAX_JSON_DEPTH:
        return JsonRead(problem=f"JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH})")
    try:
        return JsonRead(value=tidy(json.loads(stripped, strict=False, parse_int=_bounded_int)))
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        strict_problem = f"not valid JSON ({_short(error)})"
    if not repair:
        return JsonRead(problem=strict_problem)
    start = stripped.find("{")
    if start < 0:
        return JsonRead(problem="no JSON object in the text")
    try:
        value = json_repair.loads(stripped[start:])
    except (Exception, RecursionError) as error:  # json-repair raises AssertionError, ValueError...
        return JsonRead(problem=f"{strict_problem}; repair failed ({type(error).__name__}: {_short(error)})")
    try:
        return JsonRead(value=tidy(value), repaired=True)
    except RecursionError:
        return JsonRead(problem="repaired JSON nests too deeply")


def read_json_object(text: str) -> JsonRead:
    """Like `read_json`, but the value is the first JSON object found (a list's first dict)."""
    result = read_json(text)
    value = result.value
    if isinstance(value, list):
        value = next((item for item in value if isinstance(item, dict)), None)
    if isinstance(value, dict):
        return JsonRead(value=value, repaired=result.repaired)
    return JsonRead(problem=result.problem or f"the JSON is a {type(result.value).__name__}, not an object")


def _short(error: BaseException, limit: int = 120) -> str:
    message = clean_text(str(error)) or type(error).__name__
    return message if len(message) <= limit else message[: limit - 1] + "…"
