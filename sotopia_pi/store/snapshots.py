"""The SQL of dataset snapshots: a manifest row and one packed row per frozen episode.

The tables are write-once (triggers refuse updates and deletes, see migration 2). What the
manifest and the frozen episodes mean is the dataset package's business: here they are text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from . import Store, StoreError


def snapshot_exists(store: Store, name: str) -> bool:
    with store.transaction() as conn:
        return conn.execute("SELECT 1 FROM dataset_snapshots WHERE name=?", (name,)).fetchone() is not None


def insert_snapshot(
    store: Store, name: str, created_at: str, manifest_json: str, episodes: Sequence[tuple[str, bytes]]
) -> None:
    """Write the episodes, then the manifest that seals them, in one transaction; StoreError if
    the name is taken or the database refuses."""
    try:
        with store.transaction() as conn:
            conn.executemany(
                "INSERT INTO dataset_snapshot_episodes (snapshot_name, episode_id, data) VALUES (?, ?, ?)",
                [(name, episode_id, data) for episode_id, data in episodes],
            )
            conn.execute(
                "INSERT INTO dataset_snapshots (name, created_at, manifest) VALUES (?, ?, ?)",
                (name, created_at, manifest_json),
            )
    except sqlite3.IntegrityError as error:
        raise StoreError(f"snapshot {name!r} could not be written: {error}") from error


def manifest_texts(store: Store) -> list[str]:
    """Every snapshot's manifest, oldest first."""
    with store.transaction() as conn:
        rows = conn.execute("SELECT manifest FROM dataset_snapshots ORDER BY created_at, name").fetchall()
    return [row["manifest"] for row in rows]


def snapshot_texts(store: Store, name: str) -> tuple[str, list[bytes | str]] | None:
    """(manifest, packed episodes in episode id order) of one snapshot, or None if there is none."""
    with store.transaction() as conn:
        header = conn.execute("SELECT manifest FROM dataset_snapshots WHERE name=?", (name,)).fetchone()
        rows = conn.execute(
            "SELECT data FROM dataset_snapshot_episodes WHERE snapshot_name=? ORDER BY episode_id", (name,)
        ).fetchall()
    if header is None:
        return None
    return header["manifest"], [row["data"] for row in rows]
