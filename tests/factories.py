"""Small, hand-written profiles for engine tests (the built-in library has the real ones)."""

from __future__ import annotations

import json

from sotopia_pi.profiles import Character, Relationship, RelationshipLevel, Scenario
from sotopia_pi.store import Store

GOOD_SCORES = {
    "believability": 8,
    "relationship": 2,
    "knowledge": 5,
    "secret": 0,
    "social_rules": -1,
    "financial_and_material_benefits": 1,
    "goal": 7,
}


def two_characters() -> tuple[Character, Character]:
    ines = Character(
        id="ines",
        first_name="Ines",
        last_name="Varga",
        age=34,
        occupation="Bicycle mechanic",
        gender="Woman",
        gender_pronoun="She/her",
        public_info="Runs a repair stall at the Saturday market.",
        personality_and_values="Blunt, fair-minded, hates waste.",
        secret="She is closing the stall next month.",
    )
    tomas = Character(
        id="tomas",
        first_name="Tomas",
        last_name="Reyes",
        age=27,
        occupation="Graduate student",
        gender="Man",
        gender_pronoun="He/him",
        public_info="Commutes by bike to the university.",
        personality_and_values="Curious and anxious about money.",
        secret="He already bought a car.",
    )
    return ines, tomas


def bike_scenario(level: RelationshipLevel = RelationshipLevel.acquaintance) -> Scenario:
    return Scenario(
        id="bike-sale",
        codename="bike_sale",
        scenario="One person sells a used bicycle to another at a weekend market.",
        agent_goals=[
            "Sell the bike for at least $250 (<extra_info>You paid $180 for the parts.</extra_info>)",
            "Buy the bike for at most $200 (<strategy_hint>Point out the worn tyres.</strategy_hint>)",
        ],
        relationship=level,
    )


def seed_store(store: Store, level: RelationshipLevel = RelationshipLevel.acquaintance) -> Scenario:
    ines, tomas = two_characters()
    store.save_character(ines)
    store.save_character(tomas)
    store.save_relationship(Relationship(agent1_id="ines", agent2_id="tomas", relationship=level))
    scenario = bike_scenario(level)
    store.save_scenario(scenario)
    return scenario


def action(kind: str, argument: str = "") -> str:
    return json.dumps({"action_type": kind, "argument": argument})


def judge_answer(scores: dict[str, int] = GOOD_SCORES) -> str:
    return json.dumps({name: {"reasoning": f"because {name}", "score": s} for name, s in scores.items()})
