"""The SQL of curation: manual decisions, curator tags, turn edits, and what each episode side
did (read from the turns' JSON). The dataset package decides; this module only reads and writes.

A decision on a whole episode is stored with side WHOLE_EPISODE (-1), so that one primary key
(episode_id, side) covers both kinds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, Field

from ..episode import ActionType, Turn, utc_now
from . import Store

WHOLE_EPISODE = -1
ADAPTER_MARK = "+adapter="  # how a stored model name carries its adapter


class DecisionRow(BaseModel):
    episode_id: str
    side: int = Field(description="0, 1, or WHOLE_EPISODE")
    decision: str
    note: str = ""
    created_at: str


class TurnEditRow(BaseModel):
    id: int
    episode_id: str
    index: int
    original: str
    edited: str | None
    created_at: str


class Player(BaseModel):
    """A model that played turns of one side, with the adapter it ran ('' for none)."""

    model: str
    adapter: str = ""

    @property
    def base_model(self) -> str:
        """The stored model name without the adapter it may carry (MODEL+adapter=...)."""
        return self.model.partition(ADAPTER_MARK)[0]


class SideActivity(BaseModel):
    """What one side of one episode did, from its turns."""

    examples: int = Field(default=0, description="turns with an action other than none and a recorded prompt")
    by_human: bool = False
    players: list[Player] = Field(default_factory=list, description="the models that played its turns, in play order")


def _rows(store: Store, sql: str, params: Iterable = ()) -> list[sqlite3.Row]:
    with store.transaction() as conn:
        return conn.execute(sql, tuple(params)).fetchall()


# -- what each side did -------------------------------------------------------------------


def _episode_clause(episode_id: str | None) -> tuple[str, tuple]:
    return ("AND episode_id=? ", (episode_id,)) if episode_id is not None else ("", ())


def _player(model: str, adapter: str | None) -> Player:
    """A turn stored before turns recorded their adapter (adapter NULL) names it only in its
    model name: that text is taken as written (Turn, reading such a record, also turns a
    registered adapter's path into NAME@vN; the SQL reads the raw JSON and cannot)."""
    if adapter is None:
        return Player(model=model, adapter=model.partition(ADAPTER_MARK)[2])
    return Player(model=model, adapter=adapter)


def side_activity(store: Store, episode_id: str | None = None) -> dict[tuple[str, int], SideActivity]:
    """(episode id, side) -> SideActivity for every side that has turns (of one episode if given).
    One pass over the turns' JSON: a group per side, model, adapter and person/model."""
    where, params = _episode_clause(episode_id)
    groups = _rows(
        store,
        "SELECT episode_id, agent, json_extract(data, '$.model') AS model, "
        "json_extract(data, '$.adapter') AS adapter, COALESCE(json_extract(data, '$.by_human'), 0) AS human, "
        "SUM(action_type != ? AND COALESCE(json_array_length(data, '$.prompt'), 0) > 0) AS acted, "
        "MIN(idx) AS first "
        f"FROM turns WHERE 1 {where}"
        "GROUP BY episode_id, agent, model, adapter, human ORDER BY episode_id, agent, first",
        (ActionType.none.value, *params),
    )
    activity: dict[tuple[str, int], SideActivity] = {}
    for row in groups:
        side = activity.setdefault((row["episode_id"], row["agent"]), SideActivity())
        side.examples += row["acted"]
        if row["human"]:
            side.by_human = True
        else:
            side.players.append(_player(row["model"] or "", row["adapter"]))
    return activity


# -- manual decisions ---------------------------------------------------------------------


def upsert_decision(store: Store, episode_id: str, side: int, decision: str, note: str, created_at: str) -> None:
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO curation_decisions (episode_id, side, decision, note, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(episode_id, side) DO UPDATE SET "
            "decision=excluded.decision, note=excluded.note, created_at=excluded.created_at",
            (episode_id, side, decision, note, created_at),
        )


def delete_decision(store: Store, episode_id: str, side: int) -> bool:
    with store.transaction() as conn:
        cursor = conn.execute("DELETE FROM curation_decisions WHERE episode_id=? AND side=?", (episode_id, side))
    return cursor.rowcount > 0


def decision_rows(store: Store) -> list[DecisionRow]:
    rows = _rows(store, "SELECT * FROM curation_decisions ORDER BY episode_id, side")
    return [DecisionRow(**dict(row)) for row in rows]


# -- curator tags -------------------------------------------------------------------------


def insert_tags(store: Store, episode_id: str, tags: Sequence[str]) -> None:
    with store.transaction() as conn:
        conn.executemany(
            "INSERT OR IGNORE INTO curation_tags (episode_id, tag, created_at) VALUES (?, ?, ?)",
            [(episode_id, tag, utc_now()) for tag in tags],
        )


def delete_tags(store: Store, episode_id: str, tags: Sequence[str]) -> None:
    with store.transaction() as conn:
        conn.executemany("DELETE FROM curation_tags WHERE episode_id=? AND tag=?", [(episode_id, t) for t in tags])


def replace_tags(store: Store, episode_id: str, tags: Sequence[str]) -> None:
    """Make the episode's curator tags exactly `tags`, in one transaction."""
    keep_clause = f" AND tag NOT IN ({','.join('?' * len(tags))})" if tags else ""
    with store.transaction() as conn:
        conn.execute(f"DELETE FROM curation_tags WHERE episode_id=?{keep_clause}", (episode_id, *tags))
        conn.executemany(
            "INSERT OR IGNORE INTO curation_tags (episode_id, tag, created_at) VALUES (?, ?, ?)",
            [(episode_id, tag, utc_now()) for tag in tags],
        )


def tag_rows(store: Store) -> list[tuple[str, str]]:
    """(episode id, tag) pairs, by episode then tag."""
    rows = _rows(store, "SELECT episode_id, tag FROM curation_tags ORDER BY episode_id, tag")
    return [(row["episode_id"], row["tag"]) for row in rows]


# -- turn edits ---------------------------------------------------------------------------


def save_turn_edit(store: Store, turn: Turn, original: str, edited: str | None, created_at: str) -> None:
    """Write the edited turn and its history entry in one transaction."""
    with store.transaction() as conn:
        conn.execute(
            "UPDATE turns SET data=? WHERE episode_id=? AND idx=?",
            (turn.model_dump_json(), turn.episode_id, turn.index),
        )
        conn.execute(
            "INSERT INTO turn_edits (episode_id, idx, original, edited, created_at) VALUES (?, ?, ?, ?, ?)",
            (turn.episode_id, turn.index, original, edited, created_at),
        )


def turn_edit_rows(store: Store, episode_id: str | None = None) -> list[TurnEditRow]:
    """The edit history, oldest first."""
    where, params = ("WHERE episode_id=? ", (episode_id,)) if episode_id is not None else ("", ())
    rows = _rows(store, f"SELECT * FROM turn_edits {where}ORDER BY id", params)
    return [
        TurnEditRow(
            id=row["id"],
            episode_id=row["episode_id"],
            index=row["idx"],
            original=row["original"],
            edited=row["edited"],
            created_at=row["created_at"],
        )
        for row in rows
    ]


def edit_stamps(store: Store) -> dict[str, int]:
    """The newest turn edit of every edited episode (a growing number)."""
    rows = _rows(store, "SELECT episode_id, MAX(id) AS stamp FROM turn_edits GROUP BY episode_id")
    return {row["episode_id"]: row["stamp"] for row in rows}
