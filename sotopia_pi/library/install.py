"""Installing the library into a store: records upserted by id, each scenario given pairings
that fit it, and the installed digest kept so that an unchanged library is not installed twice."""

from __future__ import annotations

import random
from pathlib import Path

from pydantic import BaseModel

from .. import paths
from ..profiles import Character, Pairing, Relationship, Scenario, valid_pairs
from ..store import Store
from ..store.library import delete_pairing, library_state, set_library_state
from .loader import library_digest, load_library
from .records import PAIRINGS_PER_SCENARIO, Library

_DIGEST_KEY = "library_digest"


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


def pairing_id(scenario_id: str, pair: tuple[str, str]) -> str:
    return f"{scenario_id}~{pair[0]}~{pair[1]}"


def keep_fitting_pairings(store: Store, scenario_id: str, allowed: set[tuple[str, str]]) -> tuple[list[Pairing], int]:
    """The scenario's stored pairings whose slot order is still `allowed`; the others are
    deleted. Returns the kept ones and how many were deleted."""
    kept = []
    stored = store.pairings(scenario_id)
    for pairing in stored:
        if tuple(pairing.agent_ids) in allowed:
            kept.append(pairing)
        else:
            delete_pairing(store, pairing.id)
    return kept, len(stored) - len(kept)


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
        kept, dropped = keep_fitting_pairings(store, scenario.id, set(library.valid_pairs(scenario)))
        removed += dropped
        if kept:
            continue
        for pair in choose_pairings(scenario, characters, library.relationships):
            store.save_pairing(Pairing(id=pairing_id(scenario.id, pair), scenario_id=scenario.id, agent_ids=list(pair)))
            created += 1
    set_library_state(store, _DIGEST_KEY, library.digest)
    return InstallReport(
        characters=len(library.characters),
        relationships=len(library.relationships),
        scenarios=len(library.scenarios),
        pairings_created=created,
        pairings_removed=removed,
        digest=library.digest,
    )


def installed_digest(store: Store) -> str | None:
    return library_state(store, _DIGEST_KEY)


def ensure_library(store: Store, path: Path | str | None = None, *, force: bool = False) -> InstallReport | None:
    """Install the library unless the store already holds this exact version of it.

    Returns the install report, or None when nothing had to be done. Costs one hash of the
    library files when it is up to date, so it is cheap to call on every start.
    """
    root = Path(path) if path else paths.library_dir()
    if not force and root.is_dir() and installed_digest(store) == library_digest(root):
        return None
    return install_library(store, load_library(root))
