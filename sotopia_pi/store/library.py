"""The SQL of the scenario library: pairings removed when they no longer fit, the install state
(which version of the library files a store holds), and the seed prompts generation has used.
The library package decides; this module only reads and writes."""

from __future__ import annotations

import sqlite3

from pydantic import BaseModel

from ..episode import utc_now
from . import Store


class SeedUse(BaseModel):
    """A seed prompt that produced a stored scenario; a seed is used once at most."""

    seed: str
    model: str
    scenario_id: str
    created_at: str


def delete_pairing(store: Store, pairing_id: str) -> None:
    with store.transaction() as conn:
        conn.execute("DELETE FROM pairings WHERE id=?", (pairing_id,))


def library_state(store: Store, key: str) -> str | None:
    with store.transaction() as conn:
        row = conn.execute("SELECT value FROM library_state WHERE key=?", (key,)).fetchone()
    return row[0] if row else None


def set_library_state(store: Store, key: str, value: str) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO library_state (key, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
            (key, value, utc_now()),
        )


def seed_uses(store: Store) -> list[SeedUse]:
    with store.transaction() as conn:
        rows = conn.execute("SELECT seed, model, scenario_id, created_at FROM seed_uses ORDER BY created_at, seed").fetchall()
    return [SeedUse(seed=row[0], model=row[1], scenario_id=row[2], created_at=row[3]) for row in rows]


def seed_use_for_scenario(store: Store, scenario_id: str) -> SeedUse | None:
    with store.transaction() as conn:
        row = conn.execute(
            "SELECT seed, model, scenario_id, created_at FROM seed_uses WHERE scenario_id=?", (scenario_id,)
        ).fetchone()
    return SeedUse(seed=row[0], model=row[1], scenario_id=row[2], created_at=row[3]) if row else None


def claim_seed(store: Store, seed: str, model: str, scenario_id: str) -> bool:
    """Record a seed as used; False if it was used meanwhile (the primary key keeps it unique)."""
    try:
        with store.transaction() as conn:
            conn.execute(
                "INSERT INTO seed_uses (seed, model, scenario_id, created_at) VALUES (?, ?, ?, ?)",
                (seed, model, scenario_id, utc_now()),
            )
    except sqlite3.IntegrityError:
        return False
    return True
