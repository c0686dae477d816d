"""Who plays a scenario: the character pairs that fit it, and the pair a new episode gets.

The CLI (`run --pairing/--characters`) and the TUI's library screen both choose through here,
so a scenario offers the same pairs, in the same order, everywhere.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from .errors import SotopiaError
from .profiles import Character, Relationship, Scenario, valid_pairs
from .store import Store

Pair = tuple[str, str]


class CastingError(SotopiaError, ValueError):
    """No pair of characters can play the scenario as asked; the message says what to pass."""


class ScenarioPairs(BaseModel):
    """The pairs that may play a scenario: the pairings on record first (in the order they
    were stored), then every other pair whose relationship and constraints fit."""

    pairs: list[Pair] = Field(default_factory=list)
    on_record: set[Pair] = Field(default_factory=set)

    @property
    def first(self) -> Pair | None:
        return self.pairs[0] if self.pairs else None


def scenario_pairs(
    store: Store,
    scenario: Scenario,
    characters: dict[str, Character] | None = None,
    relationships: list[Relationship] | None = None,
) -> ScenarioPairs:
    """The pairs for `scenario`; a pairing whose character is gone is left out. A caller that
    already holds the characters and relationships passes them to save reading them again."""
    if characters is None:
        characters = {c.id: c for c in store.characters()}
    if relationships is None:
        relationships = store.relationships()
    recorded = [(p.agent_ids[0], p.agent_ids[1]) for p in store.pairings(scenario.id)]
    pairs = [pair for pair in dict.fromkeys(recorded) if pair[0] in characters and pair[1] in characters]
    pairs += [pair for pair in valid_pairs(scenario, characters, relationships) if pair not in pairs]
    return ScenarioPairs(pairs=pairs, on_record=set(recorded) & set(pairs))


def find_character(store: Store, text: str) -> str:
    """The id of the one character with this id or name; an exact full name beats a partial one."""
    matches = store.find_characters(text)
    exact = [c for c in matches if text.lower() in (c.id.lower(), c.name.lower())]
    candidates = exact or matches
    if len(candidates) == 1:
        return candidates[0].id
    if not candidates:
        raise CastingError(f"no character has the id or name {text!r}; see `sotopia-pi characters list`")
    listed = "; ".join(f"{c.name} ({c.id})" for c in candidates[:10])
    raise CastingError(f"{text!r} matches {len(candidates)} characters: {listed}; write a full name or an id")


def choose_characters(
    store: Store, scenario_id: str, pairing: str | None = None, characters: str | None = None
) -> Pair:
    """The two characters for a new episode: a pairing by id, two names or ids ("A, B"), or,
    with neither, the scenario's first pair (`scenario_pairs`)."""
    if pairing and characters:
        raise CastingError("pass either --pairing or --characters, not both")
    if pairing:
        found = store.pairing(pairing)
        if found.scenario_id != scenario_id:
            raise CastingError(f"pairing {pairing} belongs to scenario {found.scenario_id}, not {scenario_id}")
        return found.agent_ids[0], found.agent_ids[1]
    if characters:
        names = [part.strip() for part in characters.split(",")]
        if len(names) != 2 or not all(names):
            raise CastingError("--characters takes two names or ids separated by a comma")
        return find_character(store, names[0]), find_character(store, names[1])
    scenario = store.scenario(scenario_id)
    first = scenario_pairs(store, scenario).first
    if first is None:
        raise CastingError(
            f"no pair of characters has the relationship scenario {scenario_id} needs "
            f"({scenario.relationship.name}); pass --characters A,B"
        )
    return first
