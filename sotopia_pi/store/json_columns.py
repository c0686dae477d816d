"""Which pydantic model each JSON column of the store holds.

SQL that reads inside a record with json_extract('$.field') depends on that model's field
names; tests/test_store_json_paths.py checks every such path in the store against this map,
so renaming a field fails a test instead of silently emptying a query.
"""

from __future__ import annotations

from pydantic import BaseModel

from ..episode import Episode, Evaluation, Turn
from ..profiles import Character, Pairing, Relationship, Scenario

JSON_COLUMNS: dict[str, type[BaseModel]] = {
    "characters.data": Character,
    "relationships.data": Relationship,
    "scenarios.data": Scenario,
    "pairings.data": Pairing,
    "episodes.data": Episode,
    "turns.data": Turn,
    "evaluations.data": Evaluation,
}
