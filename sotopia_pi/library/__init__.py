"""The built-in scenario library: characters, relationships, scenarios and seed prompts.

The library lives in TOML files under scenarios/ (see paths.library_dir()):

    characters.toml          [[character]] tables (sotopia_pi.profiles.Character fields)
    relationships.toml       [[relationship]] tables (Relationship fields)
    scenarios/<codename>.toml  one Scenario per file
    seed_prompts.txt         one inspirational prompt per line, for scenario generation

`load_library` reads and checks all of it and reports every problem at once, each naming the
file, the record and the field. `ensure_library` installs it into a store once, and again
whenever the files change. `validate_scenario` / `validate_character` give field-level errors
for a single record (what an authoring screen needs), and `scenario_to_toml` /
`character_to_toml` write a record back in the library format.
"""

from __future__ import annotations

import hashlib
import random
import re
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ValidationError

from ..errors import SotopiaError
from .. import paths
from ..episode import utc_now
from ..profiles import Character, Pairing, Relationship, RelationshipLevel, Scenario, new_id, valid_pairs
from .sotopia_io import FieldProblem, check_hint_tags
from ..store import Store
from ..visibility import HINT_TAG_MARKUP

LIBRARY_SOURCE = "sotopia-pi library"
CATEGORIES = (
    "cooperation",
    "negotiation",
    "persuasion",
    "competition",
    "accommodation",
    "exchange",
    "dilemma",
)
MIN_AGE, MAX_AGE = 18, 70
MIN_PAIRS = 5
PAIRINGS_PER_SCENARIO = 5
MIN_SCENARIO_CHARS = 40
MIN_GOAL_CHARS = 15

CHARACTERS_FILE = "characters.toml"
RELATIONSHIPS_FILE = "relationships.toml"
SCENARIOS_DIR = "scenarios"
SEEDS_FILE = "seed_prompts.txt"

# Bump when install_library changes what it writes, so stores reinstall even if files did not.
_INSTALL_FORMAT = "1"
_DIGEST_KEY = "library_digest"

# Fields a library character must fill in: the issue asks for full profiles.
_REQUIRED_CHARACTER_TEXT = (
    "id",
    "last_name",
    "occupation",
    "gender",
    "gender_pronoun",
    "public_info",
    "big_five",
    "personality_and_values",
    "decision_making_style",
    "secret",
)
_REQUIRED_CHARACTER_LISTS = ("moral_values", "schwartz_personal_values")

_CHARACTER_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_CODENAME = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
_GENDERED = re.compile(r"\b(he|she|him|her|his|hers|himself|herself)\b", re.IGNORECASE)


class FieldError(BaseModel):
    """One problem with one field of one record. `field` is None for record-level problems."""

    field: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class Problem(BaseModel):
    """A FieldError located in the library: file, line of the record, and which record."""

    file: str
    line: int | None = None
    record: str | None = None
    field: str | None = None
    message: str

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        if self.record:
            where += f": {self.record}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class LibraryError(SotopiaError, ValueError):
    """The library did not load. `problems` lists every one found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        count = len(problems)
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in the scenario library:\n{lines}")


@dataclass
class Library:
    root: Path
    characters: list[Character]
    relationships: list[Relationship]
    scenarios: list[Scenario]
    seed_prompts: list[str]
    digest: str
    files: dict[str, str] = field(default_factory=dict)  # record id -> file it came from

    @property
    def character_map(self) -> dict[str, Character]:
        return {c.id: c for c in self.characters}

    def scenario(self, id_or_codename: str) -> Scenario:
        for scenario in self.scenarios:
            if id_or_codename in (scenario.id, scenario.codename):
                return scenario
        raise KeyError(f"no library scenario {id_or_codename!r}")

    def valid_pairs(self, scenario: Scenario) -> list[tuple[str, str]]:
        return valid_pairs(scenario, self.character_map, self.relationships)

    def pair_count(self, scenario: Scenario) -> int:
        """Distinct character pairs (either slot order counts once) that may play `scenario`."""
        return len({frozenset(pair) for pair in self.valid_pairs(scenario)})

    def summary(self) -> dict[str, Any]:
        pair_counts = {s.codename: self.pair_count(s) for s in self.scenarios}
        fewest = min(pair_counts.items(), key=lambda item: item[1], default=(None, 0))
        levels = Counter(RelationshipLevel(s.relationship).name for s in self.scenarios)
        return {
            "path": str(self.root),
            "characters": len(self.characters),
            "relationships": len(self.relationships),
            "scenarios": len(self.scenarios),
            "seed_prompts": len(self.seed_prompts),
            "scenarios_per_category": {c: sum(s.category == c for s in self.scenarios) for c in CATEGORIES},
            "scenarios_per_level": {level.name: levels.get(level.name, 0) for level in RelationshipLevel},
            "relationships_per_level": {
                level.name: sum(r.relationship == level for r in self.relationships)
                for level in RelationshipLevel
            },
            "min_valid_pairs": fewest[1],
            "min_valid_pairs_scenario": fewest[0],
            "digest": self.digest,
        }


# -- single records ------------------------------------------------------------------------


def _pydantic_errors(error: ValidationError) -> list[FieldError]:
    found = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"]) or None
        if problem["type"] == "string_too_short" and not str(problem.get("input", "x")).strip():
            found.append(FieldError(field=location, message="is required"))
            continue
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] not in {"missing", "extra_forbidden"} and "input" in problem:
            shown = repr(problem["input"])
            message += f" (got {shown[:60]}{'...' if len(shown) > 60 else ''})"
        found.append(FieldError(field=location, message=message))
    return found


def _check_character(data: dict, *, library_id: bool = True) -> tuple[Character | None, list[FieldError]]:
    """`library_id=False` accepts any id (a record already in the store, such as an imported
    SOTOPIA character with a ULID); the library's files need readable ids."""
    errors: list[FieldError] = []
    for name in _REQUIRED_CHARACTER_TEXT:
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            errors.append(FieldError(field=name, message="is required for a library character"))
    for name in _REQUIRED_CHARACTER_LISTS:
        value = data.get(name)
        if not isinstance(value, list) or not any(str(item).strip() for item in value):
            errors.append(FieldError(field=name, message="needs at least one value"))
    character_id = data.get("id")
    if library_id and isinstance(character_id, str) and character_id.strip() and not _CHARACTER_ID.match(character_id):
        errors.append(
            FieldError(field="id", message=f"use lower-case words joined by '-', like 'mara-okafor' (got {character_id!r})")
        )
    age = data.get("age")
    if isinstance(age, int) and not isinstance(age, bool) and not MIN_AGE <= age <= MAX_AGE:
        errors.append(FieldError(field="age", message=f"must be between {MIN_AGE} and {MAX_AGE} (got {age})"))
    elif "age" not in data:
        errors.append(FieldError(field="age", message="is required for a library character"))
    try:
        character = Character.model_validate(data)
    except ValidationError as error:
        return None, errors + _pydantic_errors(error)
    return (None if errors else character), errors


def validate_character(data: dict) -> list[FieldError]:
    """Field-level problems with a character dict (empty when it is a valid library character)."""
    return _check_character(data)[1]


def _scenario_style_errors(scenario: Scenario) -> list[FieldError]:
    """The library's writing rules: real content, well-formed hints, gender-neutral text."""
    errors = []
    if len(scenario.scenario.strip()) < MIN_SCENARIO_CHARS:
        errors.append(FieldError(field="scenario", message=f"is too short to play (under {MIN_SCENARIO_CHARS} characters)"))
    texts = [("scenario", scenario.scenario)] + [
        (f"agent_goals.{index}", goal) for index, goal in enumerate(scenario.agent_goals)
    ]
    for name, text in texts:
        match = _GENDERED.search(HINT_TAG_MARKUP.sub(" ", text))
        if match:
            errors.append(
                FieldError(field=name, message=f"must be gender-neutral; found {match.group(0)!r} (say 'they' or 'the other person')")
            )
    for index, goal in enumerate(scenario.agent_goals):
        name = f"agent_goals.{index}"
        if len(HINT_TAG_MARKUP.sub("", goal).strip()) < MIN_GOAL_CHARS:
            errors.append(FieldError(field=name, message=f"is too short to act on (under {MIN_GOAL_CHARS} characters)"))
        try:
            check_hint_tags(goal, name)
        except FieldProblem as problem:
            errors.append(FieldError(field=name, message=str(problem).removeprefix(f"{name}: ")))
    if len(scenario.agent_goals) == 2 and _normalize(scenario.agent_goals[0]) == _normalize(scenario.agent_goals[1]):
        errors.append(FieldError(field="agent_goals", message="the two goals are identical; give each side its own goal"))
    if scenario.age_constraint is not None:
        for slot, (low, high) in enumerate(scenario.age_constraint):
            if low < MIN_AGE or high > MAX_AGE:
                errors.append(
                    FieldError(field=f"age_constraint.{slot}", message=f"must stay within {MIN_AGE}..{MAX_AGE} (got {low}..{high})")
                )
    return errors


def _check_scenario(data: dict, default_codename: str | None = None) -> tuple[Scenario | None, list[FieldError]]:
    record = dict(data)
    errors: list[FieldError] = []
    codename = record.get("codename", default_codename)
    if not isinstance(codename, str) or not codename.strip():
        errors.append(FieldError(field="codename", message="is required (lower_case_with_underscores)"))
    elif not _CODENAME.match(codename):
        errors.append(FieldError(field="codename", message=f"use lower-case words joined by '_' (got {codename!r})"))
    else:
        record["codename"] = codename
        record.setdefault("id", codename)
    record.setdefault("source", LIBRARY_SOURCE)
    category = record.get("category")
    if category not in CATEGORIES:
        got = f" (got {category!r})" if category else ""
        errors.append(FieldError(field="category", message=f"must be one of {', '.join(CATEGORIES)}{got}"))
    if "relationship" not in record:
        errors.append(FieldError(field="relationship", message="is required (a level name such as 'friend', or 0..5)"))
    try:
        scenario = Scenario.model_validate(record)
    except ValidationError as error:
        return None, errors + _pydantic_errors(error)
    errors += _scenario_style_errors(scenario)
    return (None if errors else scenario), errors


def validate_scenario(data: dict) -> list[FieldError]:
    """Field-level problems with a scenario dict (empty when it is a valid library scenario)."""
    return _check_scenario(data)[1]


def scenario_from_dict(data: dict) -> Scenario:
    """A library Scenario from a dict, or ValueError listing every field problem."""
    scenario, errors = _check_scenario(data)
    if scenario is None:
        raise ValueError("; ".join(str(e) for e in errors))
    return scenario


def character_from_dict(data: dict) -> Character:
    character, errors = _check_character(data)
    if character is None:
        raise ValueError("; ".join(str(e) for e in errors))
    return character


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


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
    if data["id"] == _relationship_id(relationship.agent1_id, relationship.agent2_id):
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


# -- loading the library -------------------------------------------------------------------


def _relationship_id(agent1_id: str, agent2_id: str) -> str:
    return f"{agent1_id}--{agent2_id}"


def _library_files(root: Path) -> list[Path]:
    files = [root / CHARACTERS_FILE, root / RELATIONSHIPS_FILE, root / SEEDS_FILE]
    files += sorted((root / SCENARIOS_DIR).glob("*.toml"))
    return files


def library_digest(root: Path | None = None) -> str:
    """A hash of every library file: it changes whenever any of them is edited, added or removed."""
    root = Path(root) if root else paths.library_dir()
    digest = hashlib.sha256(_INSTALL_FORMAT.encode())
    for path in _library_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
        digest.update(b"\0")
    return digest.hexdigest()


class _Reader:
    """Collects problems while reading; every message names its file relative to the library."""

    def __init__(self, root: Path):
        self.root = root
        self.problems: list[Problem] = []

    def shown(self, path: Path) -> str:
        try:
            return path.relative_to(self.root.parent).as_posix()
        except ValueError:
            return str(path)

    def add(self, path: Path, message: str, *, line: int | None = None, record: str | None = None, field: str | None = None) -> None:
        self.problems.append(Problem(file=self.shown(path), line=line, record=record, field=field, message=message))

    def toml(self, path: Path) -> dict | None:
        if not path.is_file():
            self.add(path, "file is missing")
            return None
        try:
            return tomllib.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a byte-order mark is fine
        except UnicodeDecodeError as error:
            self.add(path, f"not UTF-8 text: {error}", line=_line_of_byte(path, error.start))
        except tomllib.TOMLDecodeError as error:
            self.add(path, f"not valid TOML: {error}", line=getattr(error, "lineno", None))
        except (ValueError, RecursionError) as error:  # an integer too long to convert, nesting too deep
            self.add(path, f"not readable TOML: {type(error).__name__}: {str(error)[:160]}")
        except OSError as error:
            self.add(path, f"cannot read the file: {error.strerror or error}")
        return None

    def tables(self, path: Path, key: str) -> list[tuple[int | None, dict]]:
        """The [[key]] tables of a file, each with the line its header is on."""
        document = self.toml(path)
        if document is None:
            return []
        for extra in sorted(set(document) - {key}):
            self.add(path, f"unexpected top-level key {extra!r}; records go in [[{key}]] tables")
        tables = document.get(key, [])
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            self.add(path, f"{key!r} must be a list of [[{key}]] tables")
            return []
        header = re.compile(rf"^\s*\[\[\s*{re.escape(key)}\s*\]\]")
        lines = [n for n, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1) if header.match(text)]
        if len(lines) != len(tables):  # inline arrays: no header lines to point at
            lines = [None] * len(tables)
        return list(zip(lines, tables))


def _line_of_byte(path: Path, offset: int) -> int | None:
    try:
        return path.read_bytes()[:offset].count(b"\n") + 1
    except OSError:
        return None


def _load_characters(reader: _Reader, root: Path) -> list[Character]:
    path = root / CHARACTERS_FILE
    characters: list[Character] = []
    seen: dict[str, int | None] = {}
    for index, (line, data) in enumerate(reader.tables(path, "character")):
        label = f"character {data.get('id') or f'#{index + 1}'}"
        character, errors = _check_character(data)
        for error in errors:
            reader.add(path, error.message, line=line, record=label, field=error.field)
        if character is None:
            continue
        if character.id in seen:
            reader.add(path, f"duplicate id (first used at line {seen[character.id]})", line=line, record=label, field="id")
            continue
        seen[character.id] = line
        characters.append(character)
    return characters


def _load_relationships(reader: _Reader, root: Path, character_ids: set[str], known_bad: set[str]) -> list[Relationship]:
    path = root / RELATIONSHIPS_FILE
    relationships: list[Relationship] = []
    seen_ids: set[str] = set()
    seen_pairs: dict[frozenset[str], int | None] = {}
    for index, (line, data) in enumerate(reader.tables(path, "relationship")):
        record = dict(data)
        first, second = record.get("agent1_id"), record.get("agent2_id")
        label = f"relationship {first}/{second}" if first and second else f"relationship #{index + 1}"
        if isinstance(first, str) and isinstance(second, str):
            record.setdefault("id", _relationship_id(first, second))
        problems = []
        for name in ("agent1_id", "agent2_id"):
            value = record.get(name)
            if isinstance(value, str) and value and value not in character_ids and value not in known_bad:
                problems.append(FieldError(field=name, message=f"no character with id {value!r} in {CHARACTERS_FILE}"))
        if not str(record.get("background_story", "")).strip():
            problems.append(FieldError(field="background_story", message="is required for a library relationship"))
        try:
            relationship = Relationship.model_validate(record)
        except ValidationError as error:
            problems += _pydantic_errors(error)
            relationship = None
        for problem in problems:
            reader.add(path, problem.message, line=line, record=label, field=problem.field)
        if relationship is None or problems:
            continue
        pair = frozenset((relationship.agent1_id, relationship.agent2_id))
        if pair in seen_pairs:
            reader.add(path, f"this pair already has a relationship (line {seen_pairs[pair]}); keep one per pair", line=line, record=label)
            continue
        if relationship.id in seen_ids:
            reader.add(path, "duplicate id", line=line, record=label, field="id")
            continue
        seen_pairs[pair] = line
        seen_ids.add(relationship.id)
        relationships.append(relationship)
    return relationships


def _load_scenarios(reader: _Reader, root: Path, files: dict[str, str]) -> list[Scenario]:
    directory = root / SCENARIOS_DIR
    if not directory.is_dir():
        reader.add(directory, "folder is missing")
        return []
    scenarios: list[Scenario] = []
    by_id: dict[str, Path] = {}
    for path in sorted(directory.glob("*.toml")):
        data = reader.toml(path)
        if data is None:
            continue
        codename = data.get("codename", path.stem)
        if codename != path.stem:
            reader.add(path, f"codename {codename!r} must match the file name {path.stem!r}", field="codename")
            continue
        scenario, errors = _check_scenario(data, default_codename=path.stem)
        for error in errors:
            reader.add(path, error.message, field=error.field)
        if scenario is None:
            continue
        if scenario.id in by_id:
            reader.add(path, f"id {scenario.id!r} is already used by {reader.shown(by_id[scenario.id])}", field="id")
            continue
        by_id[scenario.id] = path
        files[scenario.id] = reader.shown(path)
        scenarios.append(scenario)
    return scenarios


def _load_seeds(reader: _Reader, root: Path) -> list[str]:
    path = root / SEEDS_FILE
    if not path.is_file():
        reader.add(path, "file is missing")
        return []
    seeds: list[str] = []
    first_line: dict[str, int] = {}
    for number, raw_bytes in enumerate(path.read_bytes().splitlines(), 1):
        if number == 1:
            raw_bytes = raw_bytes.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError as error:
            reader.add(path, f"not UTF-8 text: {error}", line=number)
            continue
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        key = _normalize(text)
        if key in first_line:
            reader.add(path, f"duplicate of line {first_line[key]}: {text!r}", line=number)
            continue
        first_line[key] = number
        seeds.append(text)
    return seeds


def _check_names(reader: _Reader, library: Library) -> None:
    names = sorted({part for c in library.characters for part in (c.first_name, c.last_name) if len(part) > 2})
    name_pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b") if names else None
    for scenario in library.scenarios:
        path = library.root.parent / library.files[scenario.id]
        if name_pattern is not None:
            for name, text in [("scenario", scenario.scenario)] + [
                (f"agent_goals.{i}", goal) for i, goal in enumerate(scenario.agent_goals)
            ]:
                match = name_pattern.search(text)
                if match:
                    reader.add(path, f"names the character {match.group(0)!r}; scenario text must not name anyone", field=name)


def _check_pairs(reader: _Reader, library: Library, min_pairs: int) -> None:
    for scenario in library.scenarios:
        path = library.root.parent / library.files[scenario.id]
        count = library.pair_count(scenario)
        if count < min_pairs:
            level = RelationshipLevel(scenario.relationship).name
            reader.add(
                path,
                f"only {count} character pair(s) can play it (relationship level {level} and its constraints); "
                f"the library needs at least {min_pairs}",
                field="relationship",
            )


def load_library(path: Path | str | None = None, *, min_pairs: int = MIN_PAIRS) -> Library:
    """Read and check the library under `path` (default: the built-in one).

    Raises LibraryError listing every problem: unreadable files, invalid fields, dangling or
    duplicate ids, text that names a character, and scenarios with fewer than `min_pairs`
    character pairs able to play them.
    """
    root = Path(path) if path else paths.library_dir()
    reader = _Reader(root)
    if not root.is_dir():
        raise LibraryError([Problem(file=str(root), message="library folder is missing")])
    digest = library_digest(root)
    characters = _load_characters(reader, root)
    character_ids = {c.id for c in characters}
    # ids of characters that exist but failed validation: reported once, not again per relationship
    raw_ids = {str(t.get("id")) for _, t in _Reader(root).tables(root / CHARACTERS_FILE, "character")}
    relationships = _load_relationships(reader, root, character_ids, raw_ids - character_ids)
    people_ok = not reader.problems
    files: dict[str, str] = {}
    scenarios = _load_scenarios(reader, root, files)
    seeds = _load_seeds(reader, root)
    library = Library(root, characters, relationships, scenarios, seeds, digest, files)
    _check_names(reader, library)
    if people_ok:  # with characters or relationships missing, pair counts would mislead
        _check_pairs(reader, library, min_pairs)
    if reader.problems:
        raise LibraryError(reader.problems)
    return library


# -- authoring: single records into the store and the library -----------------------------

AUTHORED_SOURCE = "sotopia-pi authored"


class RecordError(SotopiaError, ValueError):
    """A record did not validate; `errors` holds one FieldError per problem."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(error) for error in errors))


def save_authored_scenario(store: Store, data: dict) -> tuple[Scenario, list[Pairing]]:
    """Validate a scenario written by a person, store it, and give it pairings if it has none.

    Without an `id` the scenario gets a fresh one (so a codename shared with a library
    scenario never overwrites it). Raises RecordError, saving nothing, when a field is wrong
    or no character pair in the store can play it.
    """
    record = dict(data)
    record.setdefault("id", new_id())
    record.setdefault("source", AUTHORED_SOURCE)
    scenario, errors = _check_scenario(record)
    if scenario is None:
        raise RecordError(errors)
    characters = {c.id: c for c in store.characters()}
    relationships = store.relationships()
    stored = store.pairings(scenario.id)
    allowed = set(valid_pairs(scenario, characters, relationships))
    kept = [p for p in stored if tuple(p.agent_ids) in allowed]
    chosen = [] if kept else choose_pairings(scenario, characters, relationships)
    if not kept and not chosen:
        level = RelationshipLevel(scenario.relationship).name
        raise RecordError([FieldError(field="relationship", message=f"no character pair in the store has a {level} relationship that fits the constraints")])
    store.save_scenario(scenario)
    for pairing in stored:
        if pairing not in kept:
            with store.transaction() as conn:
                conn.execute("DELETE FROM pairings WHERE id=?", (pairing.id,))
    new = [Pairing(id=_pairing_id(scenario.id, pair), scenario_id=scenario.id, agent_ids=list(pair)) for pair in chosen]
    for pairing in new:
        store.save_pairing(pairing)
    return scenario, kept + new


def save_authored_character(store: Store, data: dict) -> Character:
    """Validate a character written by a person and store it; RecordError lists what is wrong.

    Without an `id` one is made from the name ("first-last", with a number if taken).
    """
    record = dict(data)
    if not record.get("id"):
        base = "-".join(re.findall(r"[a-z0-9]+", f"{record.get('first_name', '')} {record.get('last_name', '')}".lower()))
        taken = {c.id for c in store.characters()}
        record["id"], suffix = base or new_id().lower(), 2
        while record["id"] in taken:
            record["id"], suffix = f"{base}-{suffix}", suffix + 1
    updating = any(c.id == record["id"] for c in store.characters())
    character, errors = _check_character(record, library_id=not updating)
    if character is None:
        raise RecordError(errors)
    store.save_character(character)
    return character


def write_scenario_file(scenario: Scenario, root: Path | str | None = None, *, overwrite: bool = False) -> Path:
    """Export a scenario into the library as scenarios/<codename>.toml and return the path."""
    errors = _check_scenario(scenario_to_dict(scenario))[1]
    if errors:
        raise RecordError(errors)
    path = (Path(root) if root else paths.library_dir()) / SCENARIOS_DIR / f"{scenario.codename}.toml"
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(scenario_to_toml(scenario), encoding="utf-8")
    return path


# -- authoring: relationships, and exporting one character into a library folder ----------


def _same_pair(relationship: Relationship, first: str, second: str) -> bool:
    return {relationship.agent1_id, relationship.agent2_id} == {first, second}


def _relationship_errors(store: Store, record: dict) -> list[FieldError]:
    errors: list[FieldError] = []
    known = {c.id for c in store.characters()}
    for name in ("agent1_id", "agent2_id"):
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            errors.append(FieldError(field=name, message="is required (a character id)"))
        elif value not in known:
            errors.append(FieldError(field=name, message=f"no character with id {value!r} in the store"))
    if record.get("agent1_id") and record.get("agent1_id") == record.get("agent2_id"):
        errors.append(FieldError(field="agent2_id", message="must be a different character from agent1_id"))
    if "relationship" not in record:
        errors.append(FieldError(field="relationship", message="is required (a level name such as 'friend', or 0..5)"))
    else:
        try:
            RelationshipLevel.parse(record["relationship"])
        except ValueError as error:
            errors.append(FieldError(field="relationship", message=str(error)))
    story = record.get("background_story")
    if not isinstance(story, str) or not story.strip():
        errors.append(FieldError(field="background_story", message="is required for a library relationship"))
    return errors


def save_authored_relationship(store: Store, data: dict) -> Relationship:
    """Validate a relationship written by a person and store it; RecordError lists what is wrong.

    Both characters must be in the store. A pair that already has a relationship (in either
    order) gets that record updated, keeping its id and slot order, rather than a second one.
    """
    record = dict(data)
    errors = _relationship_errors(store, record)
    if errors:
        raise RecordError(errors)
    first, second = record["agent1_id"], record["agent2_id"]
    existing = next((r for r in store.relationships() if _same_pair(r, first, second)), None)
    if existing is not None:
        record.update(id=existing.id, agent1_id=existing.agent1_id, agent2_id=existing.agent2_id)
    else:
        record.setdefault("id", _relationship_id(first, second))
    try:
        relationship = Relationship.model_validate(record)
    except ValidationError as error:
        raise RecordError(_pydantic_errors(error)) from error
    store.save_relationship(relationship)
    return relationship


_CHARACTERS_HEADER = (
    "# Characters exported from sotopia-pi: one [[character]] table per person, with the fields\n"
    "# of sotopia_pi.profiles.Character.\n"
)
_RELATIONSHIPS_HEADER = (
    "# Relationships exported from sotopia-pi: one [[relationship]] table per pair; `relationship`\n"
    "# is a level name (stranger, know_by_name, acquaintance, friend, romantic_relationship,\n"
    "# family_member).\n"
)


def _table_blocks(lines: list[str], table: str) -> list[tuple[int, int, dict]]:
    """Each [[table]] of a file as (first line, end line, its data). The end leaves out the
    blank and comment lines before the next table: they introduce it, so they stay put."""
    header = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]")
    starts = [index for index, line in enumerate(lines) if header.match(line)]
    blocks = []
    for start, stop in zip(starts, starts[1:] + [len(lines)]):
        data = tomllib.loads("\n".join(lines[start:stop]))[table][0]
        end = stop
        while end - 1 > start and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
            try:  # a '#' line may be the inside of a multi-line string: trim only if nothing changes
                if tomllib.loads("\n".join(lines[start : end - 1]))[table][0] != data:
                    break
            except tomllib.TOMLDecodeError:
                break
            end -= 1
        blocks.append((start, end, data))
    return blocks


def _upsert_table(path: Path, table: str, new_table: str, same: Callable[[dict], bool], header: str) -> None:
    """Write `new_table` into the file at `path` in place of the table(s) that `same` picks,
    or at the end when there is none; every other line of the file stays as it was."""
    text = path.read_text(encoding="utf-8") if path.is_file() else header
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML ({error}); fix it before exporting into it") from error
    lines = text.splitlines()
    blocks = _table_blocks(lines, table)
    if len(blocks) != len(document.get(table, [])):
        raise ValueError(f"{path}: write each record as a [[{table}]] table before exporting into it")
    matches = [(start, end) for start, end, data in blocks if same(data)]
    new_lines = new_table.rstrip("\n").splitlines()
    if matches:
        for start, end in reversed(matches[1:]):  # a duplicate left by hand goes too
            del lines[start:end]
        start, end = matches[0]
        lines[start:end] = new_lines
    else:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ([""] if lines else []) + new_lines
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _character_ids_in(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    tables = tomllib.loads(path.read_text(encoding="utf-8")).get("character", [])
    return {str(t.get("id")) for t in tables if isinstance(t, dict) and t.get("id")}


def export_character(store: Store, character_id: str, root: Path | str) -> list[Path]:
    """Write a stored character into root/characters.toml and its relationships into
    root/relationships.toml, in the library format; returns the files written.

    A record already in the file (same character id, same pair) is replaced in place, a new
    one is appended; the rest of each file, comments included, is kept. Only relationships
    whose other character is in root's characters.toml or the built-in library are written,
    and only library-valid ones (with a background story). Raises RecordError when the
    character is not a valid library character, ValueError when a file cannot be edited.
    """
    character = store.character(character_id)
    data = character_to_dict(character)
    errors = validate_character(data)
    if errors:
        raise RecordError(errors)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    characters_path = root / CHARACTERS_FILE
    _upsert_table(characters_path, "character", character_to_toml(character), lambda t: t.get("id") == character.id, _CHARACTERS_HEADER)
    written = [characters_path]
    known = _character_ids_in(characters_path) | _character_ids_in(paths.library_dir() / CHARACTERS_FILE)
    related = [
        r for r in store.relationships()
        if character.id in (r.agent1_id, r.agent2_id) and {r.agent1_id, r.agent2_id} <= known and r.background_story.strip()
    ]
    relationships_path = root / RELATIONSHIPS_FILE
    for relationship in related:
        pair = {relationship.agent1_id, relationship.agent2_id}
        _upsert_table(
            relationships_path,
            "relationship",
            relationship_to_toml(relationship),
            lambda t, pair=pair: {t.get("agent1_id"), t.get("agent2_id")} == pair,
            _RELATIONSHIPS_HEADER,
        )
    if related:
        written.append(relationships_path)
    return written


# -- installing into a store ---------------------------------------------------------------


def choose_pairings(
    scenario: Scenario,
    characters: dict[str, Character],
    relationships: list[Relationship],
    count: int = PAIRINGS_PER_SCENARIO,
    rng: random.Random | None = None,
) -> list[tuple[str, str]]:
    """Up to `count` distinct character pairs for a scenario, each in an admissible slot order.

    Without `rng` the choice is seeded by the scenario id, so reinstalling picks the same pairs.
    """
    rng = rng or random.Random(f"pairings:{scenario.id}")
    orders: dict[frozenset[str], list[tuple[str, str]]] = {}
    for pair in valid_pairs(scenario, characters, relationships):
        orders.setdefault(frozenset(pair), []).append(pair)
    groups = sorted(orders.values())
    rng.shuffle(groups)
    return [rng.choice(group) for group in groups[:count]]


def _pairing_id(scenario_id: str, pair: tuple[str, str]) -> str:
    return f"{scenario_id}~{pair[0]}~{pair[1]}"


class InstallReport(BaseModel):
    characters: int
    relationships: int
    scenarios: int
    pairings_created: int
    pairings_removed: int
    digest: str


def install_library(store: Store, library: Library) -> InstallReport:
    """Save the library into the store and give every library scenario its pairings.

    Records are upserted by their stable ids. A scenario keeps stored pairings that still fit
    its relationship level and constraints; ones that no longer fit are removed, and a scenario
    left with none gets up to PAIRINGS_PER_SCENARIO new ones, chosen deterministically.
    """
    characters = library.character_map
    for character in library.characters:
        store.save_character(character)
    for relationship in library.relationships:
        store.save_relationship(relationship)
    created = removed = 0
    for scenario in library.scenarios:
        store.save_scenario(scenario)
        allowed = set(library.valid_pairs(scenario))
        kept = []
        for pairing in store.pairings(scenario.id):
            if tuple(pairing.agent_ids) in allowed:
                kept.append(pairing)
                continue
            with store.transaction() as conn:
                conn.execute("DELETE FROM pairings WHERE id=?", (pairing.id,))
            removed += 1
        if kept:
            continue
        for pair in choose_pairings(scenario, characters, library.relationships):
            store.save_pairing(Pairing(id=_pairing_id(scenario.id, pair), scenario_id=scenario.id, agent_ids=list(pair)))
            created += 1
    _set_state(store, _DIGEST_KEY, library.digest)
    return InstallReport(
        characters=len(library.characters),
        relationships=len(library.relationships),
        scenarios=len(library.scenarios),
        pairings_created=created,
        pairings_removed=removed,
        digest=library.digest,
    )


def installed_digest(store: Store) -> str | None:
    with store.transaction() as conn:
        row = conn.execute("SELECT value FROM library_state WHERE key=?", (_DIGEST_KEY,)).fetchone()
    return row[0] if row else None


def _set_state(store: Store, key: str, value: str) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO library_state (key, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            (key, value, utc_now()),
        )


def ensure_library(store: Store, path: Path | str | None = None, *, force: bool = False) -> InstallReport | None:
    """Install the library unless the store already holds this exact version of it.

    Returns the install report, or None when nothing had to be done. Costs one hash of the
    library files when it is up to date, so it is cheap to call on every start.
    """
    root = Path(path) if path else paths.library_dir()
    if not force and root.is_dir() and installed_digest(store) == library_digest(root):
        return None
    return install_library(store, load_library(root))
