"""Import and export SOTOPIA's profile files.

SOTOPIA publishes its benchmark as four JSONL files (characters, scenarios, relationships and
the fixed scenario/character pairings). Their export has quirks: levels as string digits,
constraints as Python-literal strings or the words "nan"/"none", list items with leading
spaces, escaped apostrophes kept as a literal backslash. The importer normalizes all of them
and keeps SOTOPIA's ids as ours. Each imported line is also stored verbatim, so that a record
nobody edited is exported byte for byte as it came; anything created or edited here is written
in SOTOPIA's conventions.

One bad line never stops an import: it becomes an error naming file, line and field, and the
other lines still load.
"""

from __future__ import annotations

import ast
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from ..errors import SotopiaError
from ..model_text import lone_surrogate_at, read_json
from ..profiles import Character, Pairing, Relationship, RelationshipLevel, Scenario
from ..store import Store
from ..visibility import HINT_TAG_MARKUP

# The 14 scenarios of SOTOPIA-hard, the subset behind SOTOPIA-pi's headline result.
SOTOPIA_HARD_SCENARIO_IDS: tuple[str, ...] = (
    "01H7VFHNV13MHN97GAH73E3KM8",
    "01H7VFHN5WVC5HKKVBHZBA553R",
    "01H7VFHN9W0WAFZCBT09PKJJNK",
    "01H7VFHPDZVVCDZR3AARA547CY",
    "01H7VFHPQQQY6H4DNC6NBQ8XTG",
    "01H7VFHN7WJK7VWVRZZTQ6DX9T",
    "01H7VFHPS5WJW2694R1MNC8JFY",
    "01H7VFHNN7XTR99319DS8KZCQM",
    "01H7VFHQ11NAMZS4A2RDGDB01V",
    "01H7VFHPSWGDGEYRP63H2DJKV0",
    "01H7VFHNF4G18PC9JHGRC8A1R6",
    "01H7VFHNNYH3W0VRWVY178K2TK",
    "01H7VFHP8AN5643B0NR0NP00VE",
    "01H7VFHN7A1ZX5KSMT2YN9RXC4",
)


# SOTOPIA's default age constraint; its sampler reads exactly this string as "no constraint" and its
# profile writer refuses anything but a string, so a scenario without one is written this way.
SOTOPIA_ANY_AGE = "[(18, 70), (18, 70)]"

# SOTOPIA writes "no constraint" as these words (pandas' NaN leaked into its export as "nan").
_NO_CONSTRAINT = {"", "none", "nan", "null"}

CHARACTER_TEXT_FIELDS = (
    "first_name",
    "last_name",
    "occupation",
    "gender",
    "gender_pronoun",
    "public_info",
    "big_five",
    "personality_and_values",
    "decision_making_style",
    "secret",
    "mbti",
)
CHARACTER_LIST_FIELDS = ("moral_values", "schwartz_personal_values")


class ImportIssue(BaseModel):
    """One problem found while importing: where it is and what is wrong."""

    file: str
    line: int | None = Field(default=None, description="1-based line number; None for the whole file")
    field: str | None = Field(default=None, description="the field as SOTOPIA names it")
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.field:
            where += f" [{self.field}]"
        return f"{where}: {self.message}"


class ImportReport(BaseModel):
    """How many records of each kind were imported, and every line that was skipped."""

    characters: int = 0
    scenarios: int = 0
    relationships: int = 0
    pairings: int = 0
    errors: list[ImportIssue] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class ExportReport(BaseModel):
    """What an export wrote: counts per file, and how many records were written fresh
    (created or edited in sotopia-pi) rather than exactly as they were imported."""

    directory: str
    characters: int = 0
    scenarios: int = 0
    relationships: int = 0
    pairings: int = 0
    rewritten: int = 0
    files: list[str] = Field(default_factory=list)


class FieldProblem(SotopiaError, ValueError):
    """A value that cannot be read, with the SOTOPIA field it came from."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


# -- normalizing SOTOPIA's values -----------------------------------------------------------


def _clean_text(value: Any) -> Any:
    """Undo the literal backslash-apostrophe that a few SOTOPIA texts carry."""
    return value.replace("\\'", "'") if isinstance(value, str) else value


def _literal(text: str, field: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as error:
        raise FieldProblem(field, f"cannot read {text!r} as a Python literal ({error})") from None


def _string_list(value: Any, field: str) -> list[str]:
    """A list of strings from a list, a stringified list, or "a, b" text.

    SOTOPIA's own database holds items that are themselves stringified lists ("['Liberty']"),
    so those are flattened too.
    """
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        value = _literal(text, field) if text.startswith("[") else text.split(",")
    if not isinstance(value, list | tuple):
        raise FieldProblem(field, f"expected a list of strings, got {value!r}")
    items: list[str] = []
    for item in value:
        if isinstance(item, str) and item.strip().startswith("["):
            items.extend(_string_list(item, field))
        elif isinstance(item, str):
            items.append(_clean_text(item))  # Character strips the leading spaces
        else:
            raise FieldProblem(field, f"expected a list of strings, got item {item!r}")
    return items


def _is_unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NO_CONSTRAINT)


def parse_age_constraint(value: Any) -> list[tuple[int, int]] | None:
    """ "[(21, 70), (21, 70)]" (a Python literal in SOTOPIA's export) -> [(21, 70), (21, 70)].

    SOTOPIA's default "[(18, 70), (18, 70)]" is read as no constraint (None), as SOTOPIA's own
    sampler reads it; that is also how a scenario without one is written back."""
    if _is_unset(value):
        return None
    if isinstance(value, str):
        value = _literal(value.strip(), "age_constraint")
    if not isinstance(value, list | tuple) or not all(
        isinstance(pair, list | tuple) and len(pair) == 2 for pair in value
    ):
        raise FieldProblem("age_constraint", f"expected one (min, max) range per agent, got {value!r}")
    ranges = [(pair[0], pair[1]) for pair in value]
    return None if str(ranges) == SOTOPIA_ANY_AGE else ranges


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets: "[a, b], c" -> ["[a, b]", "c"]."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        depth += {"[": 1, "]": -1}.get(char, 0)
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts]


def _per_slot_lists(value: Any, field: str) -> list[list[str]]:
    """Two slots, each a list of allowed values; a bare string in a slot means just that one."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            # SOTOPIA writes e.g. "[actor, actor]": a list whose items are not quoted.
            if not (text.startswith("[") and text.endswith("]")):
                raise FieldProblem(field, f"expected a list with one entry per agent, got {text!r}") from None
            value = [
                [item.strip() for item in part.strip("[]").split(",") if item.strip()]
                if part.startswith("[")
                else part
                for part in _split_top_level(text[1:-1])
            ]
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise FieldProblem(field, f"expected a list with one entry per agent (2), got {value!r}")
    slots = []
    for slot in value:
        if isinstance(slot, str):
            slots.append([slot.strip()] if slot.strip() else [])
        elif isinstance(slot, list | tuple) and all(isinstance(item, str) for item in slot):
            slots.append([item.strip() for item in slot if item.strip()])
        else:
            raise FieldProblem(field, f"each agent's entry must be a string or a list of strings, got {slot!r}")
    return slots


def parse_occupation_constraint(value: Any) -> list[list[str]] | None:
    return None if _is_unset(value) else _per_slot_lists(value, "occupation_constraint")


def parse_agent_constraint(value: Any) -> list[list[str]] | None:
    return None if _is_unset(value) else _per_slot_lists(value, "agent_constraint")


def check_hint_tags(goal: str, field: str) -> None:
    """Hint tags must open and close in order (one nesting level occurs in SOTOPIA's data)."""
    open_tags: list[str] = []
    for match in HINT_TAG_MARKUP.finditer(goal):
        closing, tag = match.group(1) == "/", match.group(2)
        if not closing:
            open_tags.append(tag)
        elif not open_tags or open_tags[-1] != tag:
            raise FieldProblem(field, f"</{tag}> at character {match.start()} closes no open <{tag}>")
        else:
            open_tags.pop()
    if open_tags:
        raise FieldProblem(field, f"<{open_tags[-1]}> is never closed")


# -- SOTOPIA record <-> our record ----------------------------------------------------------


def _require(record: dict, *keys: str) -> Any:
    """The value of the first of `keys` present (SOTOPIA's models and exports name ids differently)."""
    for key in keys:
        if key in record:
            return record[key]
    raise FieldProblem(keys[0], "missing")


def _level(record: dict) -> RelationshipLevel:
    value = _require(record, "relationship")
    try:
        return RelationshipLevel.parse(value)
    except ValueError:
        levels = ", ".join(f"{level.value} ({level.name})" for level in RelationshipLevel)
        raise FieldProblem("relationship", f"expected one of {levels}; got {value!r}") from None


def _optional_text(record: dict, key: str) -> dict[str, Any]:
    value = record.get(key)
    return {} if value is None else {key: _clean_text(value)}


def character_from_sotopia(record: dict) -> Character:
    data: dict[str, Any] = {"id": _require(record, "agent_id", "pk")}
    for field in (*CHARACTER_TEXT_FIELDS, "tag"):
        data.update(_optional_text(record, field))
    if "first_name" not in record:
        raise FieldProblem("first_name", "missing")
    if record.get("age") is not None:
        data["age"] = record["age"]
    for field in CHARACTER_LIST_FIELDS:
        data[field] = _string_list(record.get(field), field)
    return Character.model_validate(data)


def character_to_sotopia(character: Character) -> dict:
    # Our field order is SOTOPIA's export order, so a plain dump lines up. SOTOPIA's profile
    # reader requires `model_id` (unused in its simulation): an empty one is what it writes.
    record = {"agent_id": character.id, **character.model_dump(exclude={"id", "tag"}), "model_id": ""}
    if character.tag:
        record["tag"] = character.tag
    return record


def scenario_from_sotopia(record: dict) -> Scenario:
    goals = _require(record, "agent_goals")
    if not isinstance(goals, list) or len(goals) != 2:
        raise FieldProblem("agent_goals", f"expected a list of 2 goals, got {goals!r}")
    for index, goal in enumerate(goals):
        if not isinstance(goal, str):
            raise FieldProblem(f"agent_goals[{index}]", f"expected text, got {goal!r}")
        check_hint_tags(goal, f"agent_goals[{index}]")
    data: dict[str, Any] = {
        "id": _require(record, "env_id", "pk"),
        "scenario": _clean_text(_require(record, "scenario")),
        "agent_goals": [_clean_text(goal) for goal in goals],
        "relationship": _level(record),
        "age_constraint": parse_age_constraint(record.get("age_constraint")),
        "occupation_constraint": parse_occupation_constraint(record.get("occupation_constraint")),
        "agent_constraint": parse_agent_constraint(record.get("agent_constraint")),
    }
    for field in ("codename", "source", "category", "tag"):
        data.update(_optional_text(record, field))
    return Scenario.model_validate(data)


def scenario_to_sotopia(scenario: Scenario) -> dict:
    age = scenario.age_constraint
    occupations = scenario.occupation_constraint
    record: dict[str, Any] = {
        "env_id": scenario.id,
        "codename": scenario.codename,
        "source": scenario.source,
        "scenario": scenario.scenario,
        "agent_goals": list(scenario.agent_goals),
        "relationship": str(int(scenario.relationship)),
        "age_constraint": str([tuple(pair) for pair in age]) if age is not None else SOTOPIA_ANY_AGE,
        "occupation_constraint": str(occupations) if occupations is not None else "nan",
        "agent_constraint": scenario.agent_constraint if scenario.agent_constraint is not None else "none",
    }
    for field in ("category", "tag"):
        if getattr(scenario, field):
            record[field] = getattr(scenario, field)
    return record


def relationship_from_sotopia(record: dict) -> Relationship:
    first = _require(record, "agent1_id", "agent_1_id")
    second = _require(record, "agent2_id", "agent_2_id")
    if first == second:
        raise FieldProblem("agent2_id", f"a relationship needs two different characters; both are {first!r}")
    data: dict[str, Any] = {
        "id": _require(record, "relationship_id", "pk"),
        "agent1_id": first,
        "agent2_id": second,
        "relationship": _level(record),
    }
    for field in ("background_story", "tag"):
        data.update(_optional_text(record, field))
    return Relationship.model_validate(data)


def relationship_to_sotopia(rel: Relationship) -> dict:
    record = {
        "relationship_id": rel.id,
        "agent1_id": rel.agent1_id,
        "agent2_id": rel.agent2_id,
        "relationship": str(int(rel.relationship)),
        "background_story": rel.background_story,
    }
    if rel.tag:
        record["tag"] = rel.tag
    return record


def pairing_from_sotopia(record: dict) -> Pairing:
    return Pairing.model_validate(
        {
            "id": _require(record, "combo_id", "pk"),
            "scenario_id": _require(record, "env_id"),
            "agent_ids": _require(record, "agent_ids"),
        }
    )


def pairing_to_sotopia(pairing: Pairing) -> dict:
    return {"combo_id": pairing.id, "env_id": pairing.scenario_id, "agent_ids": list(pairing.agent_ids)}


@dataclass(frozen=True)
class _Kind:
    name: str  # the store table and the report field
    file: str
    field_names: dict[str, str]  # our field -> SOTOPIA's, where they differ
    parse: Callable[[dict], BaseModel]
    to_sotopia: Callable[[Any], dict]


KINDS: tuple[_Kind, ...] = (
    _Kind("characters", "agent_profiles.jsonl", {"id": "agent_id"},
          character_from_sotopia, character_to_sotopia),
    _Kind("scenarios", "environment_profiles.jsonl", {"id": "env_id"},
          scenario_from_sotopia, scenario_to_sotopia),
    _Kind("relationships", "relationship_profiles.jsonl", {"id": "relationship_id"},
          relationship_from_sotopia, relationship_to_sotopia),
    _Kind("pairings", "env_agent_combo_storages.jsonl", {"id": "combo_id", "scenario_id": "env_id"},
          pairing_from_sotopia, pairing_to_sotopia),
)  # fmt: skip
SOTOPIA_FILES = {kind.name: kind.file for kind in KINDS}


# -- import ---------------------------------------------------------------------------------


def read_objects(path: Path, report: ImportReport) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each JSON-object line; report the lines that are not."""
    if not path.is_file():
        report.errors.append(ImportIssue(file=path.name, message=f"file not found: {path}"))
        return
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            report.errors.append(ImportIssue(file=path.name, line=number, message=f"not UTF-8: {error}"))
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            message = f"invalid JSON at column {error.colno}: {error.msg}"
            report.errors.append(ImportIssue(file=path.name, line=number, message=message))
            continue
        except (ValueError, RecursionError):  # numbers too long to convert, nesting too deep
            read = read_json(text, repair=False, clean=False, max_chars=len(text) + 1)
            if read.problem:
                report.errors.append(ImportIssue(file=path.name, line=number, message=read.problem))
                continue
            value = read.value
        if isinstance(value, dict):
            where = lone_surrogate_at(value)
            if where is not None:
                field = where.split(".")[0].split("[")[0]
                report.errors.append(ImportIssue(
                    file=path.name, line=number, field=field,
                    message=f"{where} holds a lone surrogate escape (\\ud800-\\udfff), which is not text",
                ))
                continue
        if not isinstance(value, dict):
            report.errors.append(
                ImportIssue(file=path.name, line=number, message=f"expected a JSON object, got {type(value).__name__}")
            )
            continue
        yield number, value


def _validation_issues(kind: _Kind, line: int, error: ValidationError) -> list[ImportIssue]:
    issues = []
    for problem in error.errors():
        loc = list(problem["loc"])
        field = kind.field_names.get(str(loc[0]), str(loc[0])) if loc else None
        if field and len(loc) > 1:
            field += "".join(f"[{part}]" for part in loc[1:])
        message = problem["msg"].removeprefix("Value error, ")
        shown = repr(problem.get("input"))[:80]
        if "input" in problem and problem["type"] != "missing" and shown not in message:
            message += f" (got {shown})"
        issues.append(ImportIssue(file=kind.file, line=line, field=field, message=message))
    return issues


def _dangling_references(record: BaseModel, characters: set[str], scenarios: set[str]) -> list[FieldProblem]:
    problems = []
    if isinstance(record, Relationship):
        for field in ("agent1_id", "agent2_id"):
            if getattr(record, field) not in characters:
                problems.append(FieldProblem(field, f"unknown character {getattr(record, field)!r}"))
    elif isinstance(record, Pairing):
        if record.scenario_id not in scenarios:
            problems.append(FieldProblem("env_id", f"unknown scenario {record.scenario_id!r}"))
        for index, agent_id in enumerate(record.agent_ids):
            if agent_id not in characters:
                problems.append(FieldProblem(f"agent_ids[{index}]", f"unknown character {agent_id!r}"))
    return problems


def _save(store: Store, record: BaseModel, source: dict) -> None:
    save = {
        Character: store.save_character,
        Scenario: store.save_scenario,
        Relationship: store.save_relationship,
        Pairing: store.save_pairing,
    }[type(record)]
    save(record, source_record=source)  # type: ignore[operator]


def import_sotopia(store: Store, directory: Path | str) -> ImportReport:
    """Import SOTOPIA's four profile files from `directory` into `store`.

    Characters and scenarios go first so that relationships and pairings can be checked
    against them (and against what the store already held). Re-importing the same files
    updates the same rows.
    """
    directory = Path(directory)
    report = ImportReport()
    for kind in KINDS:
        characters = {c.id for c in store.characters()}
        scenarios = {s.id for s in store.scenarios()}
        first_line_of: dict[str, int] = {}
        for line, source in read_objects(directory / kind.file, report):
            try:
                record = kind.parse(source)
            except FieldProblem as problem:
                report.errors.append(ImportIssue(file=kind.file, line=line, field=problem.field, message=problem.message))
                continue
            except ValidationError as error:
                report.errors.extend(_validation_issues(kind, line, error))
                continue
            except (ValueError, TypeError, RecursionError, OverflowError) as error:  # a shape no check foresaw
                message = f"cannot read this record: {type(error).__name__}: {str(error)[:200]}"
                report.errors.append(ImportIssue(file=kind.file, line=line, message=message))
                continue
            problems = _dangling_references(record, characters, scenarios)
            record_id = record.id  # type: ignore[attr-defined]
            if record_id in first_line_of:
                id_field = kind.field_names["id"]
                problems.append(FieldProblem(id_field, f"duplicate id {record_id!r}, first on line {first_line_of[record_id]}"))
            if problems:
                report.errors.extend(
                    ImportIssue(file=kind.file, line=line, field=p.field, message=p.message) for p in problems
                )
                continue
            first_line_of[record_id] = line
            _save(store, record, source)
            setattr(report, kind.name, getattr(report, kind.name) + 1)
    return report


# -- export ---------------------------------------------------------------------------------


def _records_in_saved_order(store: Store, kind: _Kind) -> list[Any]:
    readers: dict[str, Callable[[], list[Any]]] = {
        "characters": store.characters,
        "scenarios": store.scenarios,
        "relationships": store.relationships,
        "pairings": store.pairings,
    }
    records = readers[kind.name]()
    by_id = {record.id: record for record in records}
    return [by_id[record_id] for record_id in store.ids_in_saved_order(kind.name) if record_id in by_id]


def _unchanged_since_import(kind: _Kind, record: BaseModel, source: dict | None) -> bool:
    if source is None:
        return False
    try:
        return kind.parse(source) == record
    except (FieldProblem, ValidationError):
        return False


def _write_atomically(path: Path, lines: list[str]) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as out:
            out.writelines(line + "\n" for line in lines)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def export_sotopia(store: Store, directory: Path | str) -> ExportReport:
    """Write the store's profiles as SOTOPIA's four JSONL files in `directory`.

    Records imported from SOTOPIA and not edited since are written exactly as they were read;
    the rest are converted to SOTOPIA's conventions.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    report = ExportReport(directory=str(directory))
    for kind in KINDS:
        lines = []
        for record in _records_in_saved_order(store, kind):
            source = store.source_record(kind.name, record.id)
            if _unchanged_since_import(kind, record, source):
                lines.append(json.dumps(source))
            else:
                lines.append(json.dumps(kind.to_sotopia(record)))
                report.rewritten += 1
        path = directory / kind.file
        _write_atomically(path, lines)
        setattr(report, kind.name, len(lines))
        report.files.append(str(path))
    return report
