"""Library records and their checks: the field rules a library character or scenario must pass
(full profiles, readable ids, gender-neutral scenario text, well-formed hints), as field-level
errors an authoring screen can show, and the Library the loader returns."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import SotopiaError
from ..profiles import Character, Relationship, RelationshipLevel, Scenario, valid_pairs
from ..visibility import HINT_TAG_MARKUP
from .sotopia_io import FieldProblem, check_hint_tags

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


class RecordError(SotopiaError, ValueError):
    """A record did not validate; `errors` holds one FieldError per problem."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(error) for error in errors))



# -- single records ------------------------------------------------------------------------


def field_errors(error: ValidationError) -> list[FieldError]:
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


def check_character(data: dict, *, library_id: bool = True) -> tuple[Character | None, list[FieldError]]:
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
        return None, errors + field_errors(error)
    return (None if errors else character), errors


def validate_character(data: dict) -> list[FieldError]:
    """Field-level problems with a character dict (empty when it is a valid library character)."""
    return check_character(data)[1]


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
    if len(scenario.agent_goals) == 2 and normalize_text(scenario.agent_goals[0]) == normalize_text(scenario.agent_goals[1]):
        errors.append(FieldError(field="agent_goals", message="the two goals are identical; give each side its own goal"))
    if scenario.age_constraint is not None:
        for slot, (low, high) in enumerate(scenario.age_constraint):
            if low < MIN_AGE or high > MAX_AGE:
                errors.append(
                    FieldError(field=f"age_constraint.{slot}", message=f"must stay within {MIN_AGE}..{MAX_AGE} (got {low}..{high})")
                )
    return errors


def check_scenario(data: dict, default_codename: str | None = None) -> tuple[Scenario | None, list[FieldError]]:
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
        return None, errors + field_errors(error)
    errors += _scenario_style_errors(scenario)
    return (None if errors else scenario), errors


def validate_scenario(data: dict) -> list[FieldError]:
    """Field-level problems with a scenario dict (empty when it is a valid library scenario)."""
    return check_scenario(data)[1]


def scenario_from_dict(data: dict) -> Scenario:
    """A library Scenario from a dict, or ValueError listing every field problem."""
    scenario, errors = check_scenario(data)
    if scenario is None:
        raise ValueError("; ".join(str(e) for e in errors))
    return scenario


def character_from_dict(data: dict) -> Character:
    character, errors = check_character(data)
    if character is None:
        raise ValueError("; ".join(str(e) for e in errors))
    return character


def normalize_text(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def relationship_id(agent1_id: str, agent2_id: str) -> str:
    return f"{agent1_id}--{agent2_id}"
