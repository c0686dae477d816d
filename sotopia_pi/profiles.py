"""Profiles: characters, relationships, scenarios and pairings.

These are the records every other part of the engine passes around. Field names follow
SOTOPIA's data model so that its benchmark imports and exports without renaming.
"""

from __future__ import annotations

import os
import threading
import time
from enum import IntEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_id_lock = threading.Lock()
_last_id_value = 0


def new_id() -> str:
    """A 26-character, time-sortable id in the same shape as SOTOPIA's ULID primary keys.

    Written here rather than pulled from a ULID package: it is a few lines and all we need is
    "sorts by creation time, never collides". Ids made in the same millisecond by this process
    still sort in creation order.
    """
    global _last_id_value
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    with _id_lock:
        value = max(value, _last_id_value + 1)
        _last_id_value = value
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


class RelationshipLevel(IntEnum):
    stranger = 0
    know_by_name = 1
    acquaintance = 2
    friend = 3
    romantic_relationship = 4
    family_member = 5

    @classmethod
    def parse(cls, value: object) -> RelationshipLevel:
        """Accept 3, "3", "friend" or "FRIEND"."""
        if isinstance(value, RelationshipLevel):
            return value
        if isinstance(value, bool):
            raise ValueError(f"relationship must be 0..5 or a level name, not {value!r}")
        if isinstance(value, int):
            return cls(value)
        if isinstance(value, str):
            text = value.strip()
            if text.lstrip("-").isdigit():
                return cls(int(text))
            try:
                return cls[text.lower().replace(" ", "_").replace("-", "_")]
            except KeyError:
                pass
        names = ", ".join(f"{level.value}={level.name}" for level in cls)
        raise ValueError(f"relationship must be one of {names}; got {value!r}")


Level = Annotated[RelationshipLevel, Field(description="relationship level 0..5")]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _strip_items(items: list[str]) -> list[str]:
    return [item.strip() for item in items if item.strip()]


class Character(Record):
    id: str = Field(default_factory=new_id)
    first_name: str = Field(min_length=1)
    last_name: str = ""
    age: int = Field(default=0, ge=0, le=130)
    occupation: str = ""
    gender: str = ""
    gender_pronoun: str = ""
    public_info: str = ""
    big_five: str = ""
    moral_values: list[str] = Field(default_factory=list)
    schwartz_personal_values: list[str] = Field(default_factory=list)
    personality_and_values: str = ""
    decision_making_style: str = ""
    secret: str = ""
    mbti: str = ""
    tag: str = ""

    @field_validator("moral_values", "schwartz_personal_values")
    @classmethod
    def _normalize_lists(cls, items: list[str]) -> list[str]:
        return _strip_items(items)

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class Relationship(Record):
    id: str = Field(default_factory=new_id)
    agent1_id: str = Field(min_length=1)
    agent2_id: str = Field(min_length=1)
    relationship: Level
    background_story: str = ""
    tag: str = ""

    @field_validator("relationship", mode="before")
    @classmethod
    def _level(cls, value: object) -> RelationshipLevel:
        return RelationshipLevel.parse(value)

    @model_validator(mode="after")
    def _two_people(self) -> Relationship:
        if self.agent1_id == self.agent2_id:
            raise ValueError("a relationship needs two different characters")
        return self


class Scenario(Record):
    id: str = Field(default_factory=new_id)
    codename: str = ""
    source: str = ""
    category: str = ""
    scenario: str = Field(min_length=1, description="the shared context both agents see")
    agent_goals: list[str] = Field(min_length=2, max_length=2)
    relationship: Level = RelationshipLevel.stranger
    age_constraint: list[tuple[int, int]] | None = None
    occupation_constraint: list[list[str]] | None = None
    agent_constraint: list[list[str]] | None = None
    tag: str = ""

    @field_validator("relationship", mode="before")
    @classmethod
    def _level(cls, value: object) -> RelationshipLevel:
        return RelationshipLevel.parse(value)

    @field_validator("agent_goals")
    @classmethod
    def _goals_not_blank(cls, goals: list[str]) -> list[str]:
        for index, goal in enumerate(goals):
            if not goal.strip():
                raise ValueError(f"goal {index + 1} is empty")
        return goals

    @field_validator("age_constraint")
    @classmethod
    def _age_ranges(cls, ranges: list[tuple[int, int]] | None) -> list[tuple[int, int]] | None:
        if ranges is None:
            return None
        if len(ranges) != 2:
            raise ValueError("age_constraint needs one (min, max) range per agent")
        for low, high in ranges:
            if low > high:
                raise ValueError(f"age range ({low}, {high}) is empty")
        return ranges

    @field_validator("occupation_constraint", "agent_constraint")
    @classmethod
    def _one_list_per_agent(cls, lists: list[list[str]] | None, info) -> list[list[str]] | None:
        if lists is not None and len(lists) != 2:
            raise ValueError(f"{info.field_name} needs one list per agent (2), got {len(lists)}")
        return lists

    def admits(self, slot: int, character: Character) -> bool:
        """Whether `character` may play agent `slot` (0 or 1) under the scenario's constraints."""
        if self.age_constraint is not None:
            low, high = self.age_constraint[slot]
            if not low <= character.age <= high:
                return False
        if self.occupation_constraint is not None:
            allowed = [o.lower() for o in self.occupation_constraint[slot]]
            if allowed and character.occupation.lower() not in allowed:
                return False
        if self.agent_constraint is not None:
            allowed_ids = self.agent_constraint[slot]
            if allowed_ids and character.id not in allowed_ids:
                return False
        return True


class Pairing(Record):
    """A scenario with the two characters who play it (SOTOPIA's EnvAgentComboStorage)."""

    id: str = Field(default_factory=new_id)
    scenario_id: str = Field(min_length=1)
    agent_ids: list[str] = Field(min_length=2, max_length=2)


def relationship_level_between(
    relationships: list[Relationship], first_id: str, second_id: str
) -> list[RelationshipLevel]:
    """All levels recorded between two characters (SOTOPIA holds a few pairs twice)."""
    pair = {first_id, second_id}
    return [r.relationship for r in relationships if {r.agent1_id, r.agent2_id} == pair]


def valid_pairs(
    scenario: Scenario,
    characters: dict[str, Character],
    relationships: list[Relationship],
) -> list[tuple[str, str]]:
    """Character pairs that may play a scenario, in relationship-profile slot order.

    A pair fits when the two have a relationship at exactly the scenario's level and each
    character satisfies the constraints of the slot it plays (SOTOPIA's constraint sampler).
    """
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for rel in relationships:
        if rel.relationship != scenario.relationship:
            continue
        first, second = characters.get(rel.agent1_id), characters.get(rel.agent2_id)
        if first is None or second is None:
            continue
        for a, b in ((first, second), (second, first)):
            key = (a.id, b.id)
            if key not in seen and scenario.admits(0, a) and scenario.admits(1, b):
                seen.add(key)
                pairs.append(key)
    return pairs
