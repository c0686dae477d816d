"""Writing records back in the library's hand-written TOML style: defaults left out, levels
by name, long strings wrapped at single spaces, and every text checked by reading it back."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import tomli_w

from ..profiles import Character, Relationship, RelationshipLevel, Scenario
from .records import LIBRARY_SOURCE, relationship_id

# -- writing records back ------------------------------------------------------------------


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    """The library-file form of a scenario: defaults left out, the level written by name."""
    data: dict[str, Any] = {}
    if scenario.id != scenario.codename:
        data["id"] = scenario.id
    data["codename"] = scenario.codename
    data["category"] = scenario.category
    data["relationship"] = RelationshipLevel(scenario.relationship).name
    if scenario.source and scenario.source != LIBRARY_SOURCE:
        data["source"] = scenario.source
    if scenario.tag:
        data["tag"] = scenario.tag
    if scenario.age_constraint is not None:
        data["age_constraint"] = [list(pair) for pair in scenario.age_constraint]
    if scenario.occupation_constraint is not None:
        data["occupation_constraint"] = scenario.occupation_constraint
    if scenario.agent_constraint is not None:
        data["agent_constraint"] = scenario.agent_constraint
    data["scenario"] = scenario.scenario
    data["agent_goals"] = list(scenario.agent_goals)
    return data


def scenario_to_toml(scenario: Scenario) -> str:
    """One scenario file's text; save it as scenarios/scenarios/<codename>.toml."""
    return _dumps(scenario_to_dict(scenario))


def character_to_dict(character: Character) -> dict[str, Any]:
    data = character.model_dump()
    return {key: value for key, value in data.items() if value not in ("", []) or key == "id"}


def character_to_toml(character: Character) -> str:
    """A [[character]] table to append to characters.toml."""
    return _dumps(character_to_dict(character), table="character")


def relationship_to_toml(relationship: Relationship) -> str:
    """A [[relationship]] table to append to relationships.toml."""
    data = relationship.model_dump()
    data["relationship"] = RelationshipLevel(relationship.relationship).name
    if data["id"] == relationship_id(relationship.agent1_id, relationship.agent2_id):
        del data["id"]
    return _dumps({key: value for key, value in data.items() if value != ""}, table="relationship")


_WRAP_AT = 92


def _dumps(data: dict[str, Any], table: str | None = None) -> str:
    """TOML in the hand-written library style (long strings wrapped), checked by reading it back.

    Should the reader disagree for any input, the plainer tomli_w output is used instead.
    """
    lines = [f"[[{table}]]"] if table else []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value) and any(len(v) > 60 for v in value):
            lines.append(f"{key} = [")
            lines += [f"    {_toml_string(item)}," for item in value]
            lines.append("]")
        else:
            lines.append(f"{key} = {_toml_string(value) if isinstance(value, str) else _toml_inline(value)}")
    text = "\n".join(lines) + "\n"
    expected = {table: [data]} if table else data
    if tomllib.loads(text) != _plain(expected):
        return tomli_w.dumps(expected, multiline_strings=False)
    return text


def _plain(value: Any) -> Any:
    """What a TOML reader gives back for `value` (tuples read back as lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _toml_inline(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _basic_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_inline(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to the library format")


def _basic_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group(0)):04x}", escaped) + '"'


def _toml_string(text: str) -> str:
    if len(text) <= 72 and "\n" not in text:
        return _basic_string(text)
    escaped = text.replace("\\", "\\\\")
    escaped = re.sub(r'"(?="|$)', '\\\\"', escaped)
    escaped = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", lambda m: f"\\u{ord(m.group(0)):04x}", escaped)
    return '"""\n' + "\n".join(_wrap(paragraph) for paragraph in escaped.split("\n")) + '"""'


def _wrap(paragraph: str) -> str:
    """Break at single spaces with a TOML line-ending backslash (which drops only the newline)."""
    lines, start, last_break = [], 0, None
    for index, char in enumerate(paragraph):
        if char == " " and index + 1 < len(paragraph) and not paragraph[index + 1].isspace():
            if index - start >= _WRAP_AT and last_break is not None:
                lines.append(paragraph[start : last_break + 1] + "\\")
                start = last_break + 1
            last_break = index
    if len(paragraph) - start > _WRAP_AT and last_break is not None and last_break >= start:
        lines.append(paragraph[start : last_break + 1] + "\\")
        start = last_break + 1
    lines.append(paragraph[start:])
    return "\n".join(lines)
