"""JSON schemas for constrained output: make the bounds in a schema hold, whatever the backend.

llama.cpp turns a schema into a grammar, but its converter ignores `minimum`/`maximum` and lets
raw control characters into strings (which strict JSON parsers reject). `prepare_schema` turns
every bounded integer into an enum of its allowed values, and `grammar_for_schema` builds the
grammar with a string rule that escapes control characters. Servers that cannot take a schema at
all get `schema_instruction`, a plain-language request to answer in that shape.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache

from ..errors import SotopiaError
from . import llama_native  # noqa: F401 - sets llama.cpp's OpenMP policy before llama_cpp loads

# isort: split
from llama_cpp.llama_grammar import json_schema_to_gbnf  # noqa: E402

# Above this many allowed values an enum grammar gets large; such a range is better left to
# the caller's validation than silently widened.
MAX_ENUM_SPAN = 1000

# llama.cpp's converter allows any byte but `"` and `\` inside strings; JSON forbids U+0000-U+001F.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


class SchemaError(SotopiaError, ValueError):
    """A schema that cannot be enforced as written."""


def prepare_schema(schema: dict) -> dict:
    """A copy of `schema` in which every integer with both bounds and no enum becomes an enum."""
    if not isinstance(schema, dict):
        raise SchemaError(f"a JSON schema must be an object, got {type(schema).__name__}")
    prepared = copy.deepcopy(schema)
    _bound_integers(prepared, path="$")
    return prepared


def _bound_integers(node: object, path: str) -> None:
    if isinstance(node, list):
        for index, item in enumerate(node):
            _bound_integers(item, f"{path}[{index}]")
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "integer" and "enum" not in node:
        low = _lower_bound(node)
        high = _upper_bound(node)
        if low is not None and high is not None:
            if high < low:
                raise SchemaError(f"{path}: empty integer range {low}..{high}")
            if high - low + 1 > MAX_ENUM_SPAN:
                raise SchemaError(
                    f"{path}: integer range {low}..{high} is too wide to enforce; "
                    f"use at most {MAX_ENUM_SPAN} values or an explicit enum"
                )
            for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                node.pop(key, None)
            node["enum"] = list(range(low, high + 1))
    for key, value in node.items():
        if isinstance(value, (dict, list)):
            _bound_integers(value, f"{path}.{key}")


def _lower_bound(node: dict) -> int | None:
    if "exclusiveMinimum" in node:
        return int(node["exclusiveMinimum"]) + 1
    if "minimum" in node:
        return int(node["minimum"])
    return None


def _upper_bound(node: dict) -> int | None:
    if "exclusiveMaximum" in node:
        return int(node["exclusiveMaximum"]) - 1
    if "maximum" in node:
        return int(node["maximum"])
    return None


def schema_key(schema: dict) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def grammar_for_schema(schema: dict) -> str:
    """GBNF text that accepts exactly the JSON documents `schema` allows (bounds included)."""
    return _grammar_for_key(schema_key(prepare_schema(schema)))


@lru_cache(maxsize=64)
def _grammar_for_key(key: str) -> str:
    try:
        grammar = json_schema_to_gbnf(key)
    except Exception as error:  # the converter raises bare Exceptions and asserts
        raise SchemaError(f"llama.cpp cannot turn this schema into a grammar: {error}") from error
    if _LOOSE_CHAR in grammar:
        grammar = grammar.replace(_LOOSE_CHAR, _STRICT_CHAR)
    return grammar


def schema_instruction(schema: dict) -> str:
    """Words asking a model to answer with one JSON object of this schema (no enforcement)."""
    prepared = prepare_schema(schema)
    return (
        "Reply with a single JSON object and nothing else: no prose before or after it, no code "
        "fences. The object must be valid JSON that follows this JSON Schema:\n"
        + json.dumps(prepared, ensure_ascii=False)
    )
