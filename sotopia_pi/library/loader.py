"""Loading the library folder: every file read and checked, every problem reported at once with
its file, line, record and field; and the digest that tells when any file changed."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

from pydantic import ValidationError

from .. import paths
from ..profiles import Character, Relationship, RelationshipLevel, Scenario
from .records import (
    MIN_PAIRS,
    FieldError,
    Library,
    LibraryError,
    Problem,
    check_character,
    check_scenario,
    field_errors,
    normalize_text,
    relationship_id,
)

CHARACTERS_FILE = "characters.toml"
RELATIONSHIPS_FILE = "relationships.toml"
SCENARIOS_DIR = "scenarios"
SEEDS_FILE = "seed_prompts.txt"

# Bump when install_library changes what it writes, so stores reinstall even if files did not.
_INSTALL_FORMAT = "1"


# -- loading the library -------------------------------------------------------------------


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
        lines: list[int | None] = [
            n for n, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1) if header.match(text)
        ]
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
        character, errors = check_character(data)
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
            record.setdefault("id", relationship_id(first, second))
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
            problems += field_errors(error)
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
        scenario, errors = check_scenario(data, default_codename=path.stem)
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
        key = normalize_text(text)
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
