"""Authoring: single records written by a person, checked and saved into the store, a scenario
exported as a library file, and a character (with its relationships) exported into a library
folder without disturbing the rest of its files."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from .. import paths
from ..profiles import Character, Pairing, Relationship, RelationshipLevel, Scenario, new_id, valid_pairs
from ..store import Store
from .install import choose_pairings, keep_fitting_pairings, pairing_id
from .loader import CHARACTERS_FILE, RELATIONSHIPS_FILE, SCENARIOS_DIR
from .records import (
    FieldError,
    RecordError,
    check_character,
    check_scenario,
    field_errors,
    relationship_id,
    validate_character,
)
from .toml_style import character_to_dict, character_to_toml, relationship_to_toml, scenario_to_dict, scenario_to_toml

AUTHORED_SOURCE = "sotopia-pi authored"


def save_authored_scenario(store: Store, data: dict) -> tuple[Scenario, list[Pairing]]:
    """Validate a scenario written by a person, store it, and give it pairings if it has none.

    Without an `id` the scenario gets a fresh one (so a codename shared with a library
    scenario never overwrites it). Raises RecordError, saving nothing, when a field is wrong
    or no character pair in the store can play it.
    """
    record = dict(data)
    record.setdefault("id", new_id())
    record.setdefault("source", AUTHORED_SOURCE)
    scenario, errors = check_scenario(record)
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
        message = f"no character pair in the store has a {level} relationship that fits the constraints"
        raise RecordError([FieldError(field="relationship", message=message)])
    store.save_scenario(scenario)
    keep_fitting_pairings(store, scenario.id, allowed)
    new = [Pairing(id=pairing_id(scenario.id, pair), scenario_id=scenario.id, agent_ids=list(pair)) for pair in chosen]
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
    character, errors = check_character(record, library_id=not updating)
    if character is None:
        raise RecordError(errors)
    store.save_character(character)
    return character


def write_scenario_file(scenario: Scenario, root: Path | str | None = None, *, overwrite: bool = False) -> Path:
    """Export a scenario into the library as scenarios/<codename>.toml and return the path."""
    errors = check_scenario(scenario_to_dict(scenario))[1]
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
        record.setdefault("id", relationship_id(first, second))
    try:
        relationship = Relationship.model_validate(record)
    except ValidationError as error:
        raise RecordError(field_errors(error)) from error
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


def _is_pair_table(pair: set[str]) -> Callable[[dict], bool]:
    return lambda table: {table.get("agent1_id"), table.get("agent2_id")} == pair


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
            _is_pair_table(pair),
            _RELATIONSHIPS_HEADER,
        )
    if related:
        written.append(relationships_path)
    return written
