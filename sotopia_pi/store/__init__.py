"""The SQLite store: profiles, episodes, turns, evaluations and the adapter registry.

One file in WAL mode so that the TUI can read while a runner thread writes and a killed
process loses nothing that was committed. Records are stored as their pydantic JSON plus the
few columns we filter and sort on. The schema is versioned with PRAGMA user_version; each
entry of MIGRATIONS moves it one step forward.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from .. import paths
from ..episode import Episode, EpisodeStatus, Evaluation, Turn, utc_now
from ..model_text import clean_text
from ..profiles import Character, Pairing, Relationship, Scenario
from ..redaction import redact
from .errors import NotFound, StoreError

MIGRATIONS: list[str] = [
    # 1: profiles, episodes, turns, evaluations
    """
    CREATE TABLE characters (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        data TEXT NOT NULL,
        source_record TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE relationships (
        id TEXT PRIMARY KEY,
        agent1_id TEXT NOT NULL,
        agent2_id TEXT NOT NULL,
        level INTEGER NOT NULL,
        data TEXT NOT NULL,
        source_record TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX relationships_level ON relationships(level);
    CREATE TABLE scenarios (
        id TEXT PRIMARY KEY,
        codename TEXT NOT NULL,
        level INTEGER NOT NULL,
        source TEXT NOT NULL,
        data TEXT NOT NULL,
        source_record TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX scenarios_codename ON scenarios(codename);
    CREATE TABLE pairings (
        id TEXT PRIMARY KEY,
        scenario_id TEXT NOT NULL,
        agent1_id TEXT NOT NULL,
        agent2_id TEXT NOT NULL,
        data TEXT NOT NULL,
        source_record TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX pairings_scenario ON pairings(scenario_id);
    CREATE TABLE episodes (
        id TEXT PRIMARY KEY,
        scenario_id TEXT NOT NULL,
        status TEXT NOT NULL,
        agent1_model TEXT NOT NULL,
        agent2_model TEXT NOT NULL,
        judge_model TEXT NOT NULL,
        turn_count INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX episodes_created ON episodes(created_at);
    CREATE INDEX episodes_scenario ON episodes(scenario_id);
    CREATE INDEX episodes_status ON episodes(status);
    CREATE TABLE turns (
        episode_id TEXT NOT NULL REFERENCES episodes(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        agent INTEGER NOT NULL,
        action_type TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (episode_id, idx)
    );
    CREATE TABLE evaluations (
        id TEXT PRIMARY KEY,
        episode_id TEXT NOT NULL REFERENCES episodes(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        after_turn INTEGER NOT NULL,
        ok INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX evaluations_episode ON evaluations(episode_id, kind);
    CREATE TABLE episode_tags (
        episode_id TEXT NOT NULL REFERENCES episodes(id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (episode_id, tag)
    );
    CREATE INDEX episode_tags_tag ON episode_tags(tag);
    """,
    # 2: curation (manual decisions, curator tags, turn edit history) and dataset snapshots.
    # Snapshot tables have no foreign keys (a snapshot outlives the episodes it froze) and
    # triggers make them write-once.
    """
    CREATE TABLE curation_decisions (
        episode_id TEXT NOT NULL REFERENCES episodes(id) ON DELETE CASCADE,
        side INTEGER NOT NULL CHECK (side IN (-1, 0, 1)),
        decision TEXT NOT NULL CHECK (decision IN ('keep', 'reject')),
        note TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        PRIMARY KEY (episode_id, side)
    );
    CREATE TABLE curation_tags (
        episode_id TEXT NOT NULL REFERENCES episodes(id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (episode_id, tag)
    );
    CREATE INDEX curation_tags_tag ON curation_tags(tag);
    CREATE TABLE turn_edits (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        episode_id TEXT NOT NULL REFERENCES episodes(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        original TEXT NOT NULL,
        edited TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX turn_edits_turn ON turn_edits(episode_id, idx);
    CREATE TABLE dataset_snapshots (
        name TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        manifest TEXT NOT NULL
    );
    CREATE TABLE dataset_snapshot_episodes (
        snapshot_name TEXT NOT NULL,
        episode_id TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (snapshot_name, episode_id)
    );
    CREATE TRIGGER dataset_snapshots_immutable BEFORE UPDATE ON dataset_snapshots
    BEGIN SELECT RAISE(ABORT, 'dataset snapshots are immutable'); END;
    CREATE TRIGGER dataset_snapshots_kept BEFORE DELETE ON dataset_snapshots
    BEGIN SELECT RAISE(ABORT, 'dataset snapshots are immutable'); END;
    CREATE TRIGGER dataset_snapshot_episodes_immutable BEFORE UPDATE ON dataset_snapshot_episodes
    BEGIN SELECT RAISE(ABORT, 'dataset snapshots are immutable'); END;
    CREATE TRIGGER dataset_snapshot_episodes_kept BEFORE DELETE ON dataset_snapshot_episodes
    BEGIN SELECT RAISE(ABORT, 'dataset snapshots are immutable'); END;
    CREATE TRIGGER dataset_snapshot_episodes_sealed BEFORE INSERT ON dataset_snapshot_episodes
    WHEN EXISTS (SELECT 1 FROM dataset_snapshots WHERE name = NEW.snapshot_name)
    BEGIN SELECT RAISE(ABORT, 'this dataset snapshot is sealed'); END;
    """,
    # 3: scenario library install state and seed-prompt usage (the library package; its SQL in store/library.py).
    """
    CREATE TABLE library_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE seed_uses (
        seed TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        scenario_id TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX seed_uses_scenario ON seed_uses(scenario_id);
    """,
    # 4: the adapter registry (adapters.py): one row per trained version of a named adapter.
    """
    CREATE TABLE adapters (
        name TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version >= 1),
        base_model TEXT NOT NULL,
        base_digest TEXT NOT NULL,
        snapshot TEXT NOT NULL,
        snapshot_digest TEXT NOT NULL,
        hyperparameters TEXT NOT NULL,
        metrics TEXT NOT NULL,
        created_at TEXT NOT NULL,
        peft_dir TEXT NOT NULL,
        gguf_path TEXT,
        status TEXT NOT NULL,
        PRIMARY KEY (name, version)
    );
    """,
    # 5: episode leases (store/leases.py): which runner plays an episode, with its heartbeat.
    """
    CREATE TABLE IF NOT EXISTS episode_leases (
        episode_id TEXT PRIMARY KEY REFERENCES episodes(id) ON DELETE CASCADE,
        token TEXT NOT NULL,
        holder TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        acquired_at TEXT NOT NULL,
        heartbeat_at REAL NOT NULL
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)

R = TypeVar("R", bound=BaseModel)


def describe_database_error(path: Path, error: sqlite3.Error) -> str:
    """What an SQLite error on the store's file means, as one sentence to act on."""
    text = str(error)
    lowered = text.lower()
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return (
            f"{path} is not a usable sotopia-pi database ({text}); move it away to start a new "
            f"store, or set {paths.HOME_ENV} to another folder"
        )
    if "readonly" in lowered or "read-only" in lowered:
        return f"{path} is read-only ({text}); sotopia-pi needs to write its store there"
    if "unable to open" in lowered or "cannot open" in lowered:
        return f"cannot open the store {path} ({text}); check that its folder exists and can be written"
    if "disk i/o" in lowered:
        return f"the store {path} cannot be written ({text}); the disk may be full or failing"
    if "full" in lowered:
        return f"the disk holding {path} is full ({text}); free some space and try again"
    if "locked" in lowered or "busy" in lowered:
        return f"the store {path} is locked by another process ({text}); try again in a moment"
    return f"the store {path} failed: {text}"


class Store:
    """Thread-safe access to one SQLite file. Every write commits before it returns."""

    def __init__(self, path: Path | str | None = None):
        """Open (or create) the store. Raises StoreError, in one sentence, for a file that is
        not a database, is damaged, cannot be opened or written, or has a newer schema
        (paths.PathsError for a data folder that cannot be made)."""
        self.path = Path(path) if path else paths.database_path()
        paths.ensure_dir(self.path.parent, "data folder")
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        except sqlite3.Error as error:
            raise StoreError(describe_database_error(self.path, error)) from None
        try:
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except (sqlite3.Error, StoreError) as error:
            self._conn.close()
            if isinstance(error, StoreError):
                raise
            raise StoreError(describe_database_error(self.path, error)) from None
        self.reclaim_interrupted()

    # -- plumbing -------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._lock:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}, newer than this sotopia-pi "
                    f"understands ({SCHEMA_VERSION}); it needs a sotopia-pi that knows schema "
                    f"version {version}: upgrade sotopia-pi"
                )
            for number in range(version, SCHEMA_VERSION):
                self._conn.executescript(
                    "BEGIN;" + MIGRATIONS[number] + f"; PRAGMA user_version={number + 1}; COMMIT;"
                )

    def reclaim_interrupted(self) -> list[str]:
        """Episodes left `running` by a process that is gone become paused and resumable."""
        from .leases import reclaim_interrupted

        return reclaim_interrupted(self)

    @property
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    @staticmethod
    def _load(model: type[R], rows: list[sqlite3.Row]) -> list[R]:
        return [model.model_validate_json(row["data"]) for row in rows]

    # -- profiles -------------------------------------------------------------------------

    def save_character(self, character: Character, source_record: dict | None = None) -> None:
        self._save_profile(
            "characters",
            character,
            source_record,
            name=character.name,
        )

    def save_relationship(self, rel: Relationship, source_record: dict | None = None) -> None:
        self._save_profile(
            "relationships",
            rel,
            source_record,
            agent1_id=rel.agent1_id,
            agent2_id=rel.agent2_id,
            level=int(rel.relationship),
        )

    def save_scenario(self, scenario: Scenario, source_record: dict | None = None) -> None:
        self._save_profile(
            "scenarios",
            scenario,
            source_record,
            codename=scenario.codename,
            level=int(scenario.relationship),
            source=scenario.source,
        )

    def save_pairing(self, pairing: Pairing, source_record: dict | None = None) -> None:
        self._save_profile(
            "pairings",
            pairing,
            source_record,
            scenario_id=pairing.scenario_id,
            agent1_id=pairing.agent_ids[0],
            agent2_id=pairing.agent_ids[1],
        )

    def _save_profile(
        self, table: str, record: BaseModel, source_record: dict | None, **columns: Any
    ) -> None:
        """Insert or replace; a record keeps its original creation time and source record."""
        values = {
            "id": record.id,  # type: ignore[attr-defined]
            **columns,
            "data": record.model_dump_json(),
            "source_record": json.dumps(source_record) if source_record is not None else None,
            "created_at": utc_now(),
        }
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        kept = {"id", "created_at", "source_record"}
        updates = ", ".join(f"{name}=excluded.{name}" for name in values if name not in kept)
        if source_record is not None:
            updates += ", source_record=excluded.source_record"
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO {table} ({names}) VALUES ({marks}) "
                f"ON CONFLICT(id) DO UPDATE SET {updates}",
                tuple(values.values()),
            )

    def source_record(self, table: str, record_id: str) -> dict | None:
        """The record as it was imported (kept so a re-export reproduces it exactly)."""
        if table not in {"characters", "relationships", "scenarios", "pairings"}:
            raise ValueError(table)
        rows = self._query(f"SELECT source_record FROM {table} WHERE id=?", (record_id,))
        if not rows or rows[0]["source_record"] is None:
            return None
        return json.loads(rows[0]["source_record"])

    def ids_in_saved_order(self, table: str) -> list[str]:
        """Profile ids in the order they were first saved (an update keeps a record's place),
        so an export lists records in the order of the file they were imported from."""
        if table not in {"characters", "relationships", "scenarios", "pairings"}:
            raise ValueError(table)
        return [row["id"] for row in self._query(f"SELECT id FROM {table} ORDER BY rowid")]

    def characters(self) -> list[Character]:
        return self._load(Character, self._query("SELECT data FROM characters ORDER BY name, id"))

    def character(self, character_id: str) -> Character:
        rows = self._query("SELECT data FROM characters WHERE id=?", (character_id,))
        if not rows:
            raise NotFound(f"no character with id {character_id!r}")
        return Character.model_validate_json(rows[0]["data"])

    def find_characters(self, name_or_id: str) -> list[Character]:
        """Characters whose id equals, or whose full name contains, the text (case-insensitive)."""
        text = name_or_id.strip().lower()
        return [c for c in self.characters() if c.id.lower() == text or text in c.name.lower()]

    def relationships(self, level: int | None = None) -> list[Relationship]:
        if level is None:
            rows = self._query("SELECT data FROM relationships ORDER BY created_at, id")
        else:
            rows = self._query(
                "SELECT data FROM relationships WHERE level=? ORDER BY created_at, id", (level,)
            )
        return self._load(Relationship, rows)

    def scenarios(self) -> list[Scenario]:
        return self._load(Scenario, self._query("SELECT data FROM scenarios ORDER BY codename, id"))

    def scenario(self, id_or_codename: str) -> Scenario:
        """A scenario by id, or by codename when exactly one scenario has it."""
        rows = self._query("SELECT data FROM scenarios WHERE id=?", (id_or_codename,))
        if not rows:
            rows = self._query("SELECT data FROM scenarios WHERE codename=?", (id_or_codename,))
            if len(rows) > 1:
                ids = ", ".join(Scenario.model_validate_json(r["data"]).id for r in rows)
                raise NotFound(f"codename {id_or_codename!r} is shared by several scenarios: {ids}")
        if not rows:
            raise NotFound(f"no scenario with id or codename {id_or_codename!r}")
        return Scenario.model_validate_json(rows[0]["data"])

    def pairings(self, scenario_id: str | None = None) -> list[Pairing]:
        if scenario_id is None:
            rows = self._query("SELECT data FROM pairings ORDER BY created_at, id")
        else:
            rows = self._query(
                "SELECT data FROM pairings WHERE scenario_id=? ORDER BY created_at, id",
                (scenario_id,),
            )
        return self._load(Pairing, rows)

    def pairing(self, pairing_id: str) -> Pairing:
        rows = self._query("SELECT data FROM pairings WHERE id=?", (pairing_id,))
        if not rows:
            raise NotFound(f"no pairing with id {pairing_id!r}")
        return Pairing.model_validate_json(rows[0]["data"])

    def counts(self) -> dict[str, int]:
        tables = ("characters", "relationships", "scenarios", "pairings", "episodes")
        return {t: self._query(f"SELECT COUNT(*) AS n FROM {t}")[0]["n"] for t in tables}

    # -- episodes -------------------------------------------------------------------------

    def save_episode(self, episode: Episode) -> None:
        episode.updated_at = utc_now()
        episode.last_error = redact(clean_text(episode.last_error))
        turn_count = self._query("SELECT COUNT(*) AS n FROM turns WHERE episode_id=?", (episode.id,))
        with self.transaction() as conn:
            _write_episode_row(conn, episode, turn_count[0]["n"])

    def has_episode(self, episode_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM episodes WHERE id=?", (episode_id,)))

    def add_finished_episode(self, episode: Episode, turns: Sequence[Turn], evaluation: Evaluation | None) -> bool:
        """Store a whole episode (an imported one) with its turns, tags and evaluation in one
        transaction. False, and nothing written, when an episode with that id exists."""
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM episodes WHERE id=?", (episode.id,)).fetchone():
                return False
            _write_episode_row(conn, episode, len(turns))
            for turn in turns:
                _write_turn(conn, turn)
            if evaluation is not None:
                _write_evaluation(conn, evaluation)
        return True

    def episode(self, episode_id: str) -> Episode:
        rows = self._query("SELECT data FROM episodes WHERE id=?", (episode_id,))
        if not rows:
            rows = self._query("SELECT data FROM episodes WHERE id LIKE ?", (episode_id + "%",))
            if len(rows) > 1:
                raise NotFound(f"episode id prefix {episode_id!r} is ambiguous")
        if not rows:
            raise NotFound(f"no episode with id {episode_id!r}")
        return Episode.model_validate_json(rows[0]["data"])

    def episodes(
        self,
        *,
        status: EpisodeStatus | str | None = None,
        scenario_id: str | None = None,
        model: str | None = None,
        tag: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Episode]:
        """Episodes newest first, optionally filtered."""
        clauses, params = self._episode_filters(status, scenario_id, model, tag)
        sql = "SELECT data FROM episodes"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        return self._load(Episode, self._query(sql, params))

    def episode_rows(self, **filters: Any) -> list[dict]:
        """Light rows for lists: id, scenario, status, models, turn count; newest first."""
        self.reclaim_interrupted()
        limit = filters.pop("limit", None)
        clauses, params = self._episode_filters(**filters)
        sql = (
            "SELECT id, scenario_id, status, agent1_model, agent2_model, judge_model, "
            "turn_count, created_at, updated_at FROM episodes"
        )
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [dict(row) for row in self._query(sql, params)]

    @staticmethod
    def _episode_filters(
        status: EpisodeStatus | str | None = None,
        scenario_id: str | None = None,
        model: str | None = None,
        tag: str | None = None,
    ) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status=?")
            params.append(str(status))
        if scenario_id is not None:
            clauses.append("scenario_id=?")
            params.append(scenario_id)
        if model is not None:
            clauses.append("(agent1_model=? OR agent2_model=?)")
            params += [model, model]
        if tag is not None:
            clauses.append("id IN (SELECT episode_id FROM episode_tags WHERE tag=?)")
            params.append(tag)
        return clauses, params

    def delete_episode(self, episode_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM episodes WHERE id=?", (episode_id,))

    # -- turns ----------------------------------------------------------------------------

    def add_turn(self, turn: Turn) -> None:
        """Commit one turn; its index must be the next one in the episode."""
        with self.transaction() as conn:
            expected = conn.execute(
                "SELECT COUNT(*) FROM turns WHERE episode_id=?", (turn.episode_id,)
            ).fetchone()[0]
            if turn.index != expected:
                raise StoreError(
                    f"turn {turn.index} of episode {turn.episode_id} is out of order "
                    f"(the next turn is {expected})"
                )
            _write_turn(conn, turn)
            conn.execute(
                "UPDATE episodes SET turn_count=?, updated_at=? WHERE id=?",
                (turn.index + 1, utc_now(), turn.episode_id),
            )

    def update_turn(self, turn: Turn) -> None:
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE turns SET data=?, action_type=? WHERE episode_id=? AND idx=?",
                (turn.model_dump_json(), turn.action_type.value, turn.episode_id, turn.index),
            )
            if cursor.rowcount != 1:
                raise NotFound(f"no turn {turn.index} in episode {turn.episode_id}")

    def turns(self, episode_id: str) -> list[Turn]:
        rows = self._query("SELECT data FROM turns WHERE episode_id=? ORDER BY idx", (episode_id,))
        return self._load(Turn, rows)

    # -- evaluations ----------------------------------------------------------------------

    def add_evaluation(self, evaluation: Evaluation) -> None:
        for agent in evaluation.agents:
            if agent.failure:
                agent.failure = redact(clean_text(agent.failure))
        with self.transaction() as conn:
            _write_evaluation(conn, evaluation)

    def evaluations(self, episode_id: str, kind: str | None = None) -> list[Evaluation]:
        sql = "SELECT data FROM evaluations WHERE episode_id=?"
        params: list[Any] = [episode_id]
        if kind is not None:
            sql += " AND kind=?"
            params.append(kind)
        sql += " ORDER BY after_turn, created_at"
        return self._load(Evaluation, self._query(sql, params))

    def terminal_evaluation(self, episode_id: str) -> Evaluation | None:
        """The newest terminal evaluation: the official score of an episode."""
        rows = self._query(
            "SELECT data FROM evaluations WHERE episode_id=? AND kind='terminal' "
            "ORDER BY created_at DESC LIMIT 1",
            (episode_id,),
        )
        return Evaluation.model_validate_json(rows[0]["data"]) if rows else None

    # -- adapter registry (records and files: adapters.py) --------------------------------

    _ADAPTER_JSON_COLUMNS = ("hyperparameters", "metrics")

    def add_adapter(self, row: dict[str, Any]) -> None:
        """Insert one adapter version (every adapters column; JSON columns given as dicts).
        Raises StoreError when that name and version are already registered."""
        values = {
            key: json.dumps(value) if key in self._ADAPTER_JSON_COLUMNS else value
            for key, value in row.items()
        }
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        try:
            with self.transaction() as conn:
                conn.execute(f"INSERT INTO adapters ({names}) VALUES ({marks})", tuple(values.values()))
        except sqlite3.IntegrityError as error:
            raise StoreError(
                f"adapter {values.get('name')!r} version {values.get('version')} cannot be registered: {error}"
            ) from None

    def next_adapter_version(self, name: str) -> int:
        rows = self._query("SELECT COALESCE(MAX(version), 0) + 1 AS v FROM adapters WHERE name=?", (name,))
        return rows[0]["v"]

    def adapter_rows(self, name: str | None = None) -> list[dict[str, Any]]:
        """Adapter rows by name, then version (all, or every version of one name)."""
        if name is None:
            rows = self._query("SELECT * FROM adapters ORDER BY name, version")
        else:
            rows = self._query("SELECT * FROM adapters WHERE name=? ORDER BY version", (name,))
        return [self._adapter_row(row) for row in rows]

    def adapter_row(self, name: str, version: int | None = None) -> dict[str, Any]:
        """One adapter version; the newest when `version` is None."""
        if version is None:
            rows = self._query(
                "SELECT * FROM adapters WHERE name=? ORDER BY version DESC LIMIT 1", (name,)
            )
        else:
            rows = self._query("SELECT * FROM adapters WHERE name=? AND version=?", (name, version))
        if not rows:
            which = f"{name!r}" if version is None else f"{name!r} version {version}"
            raise NotFound(f"no adapter {which}")
        return self._adapter_row(rows[0])

    def delete_adapter_rows(self, name: str, version: int | None = None) -> int:
        """Delete one version (or all versions) of an adapter; returns how many rows went."""
        with self.transaction() as conn:
            if version is None:
                cursor = conn.execute("DELETE FROM adapters WHERE name=?", (name,))
            else:
                cursor = conn.execute("DELETE FROM adapters WHERE name=? AND version=?", (name, version))
        return cursor.rowcount

    def _adapter_row(self, row: sqlite3.Row) -> dict[str, Any]:
        values = dict(row)
        for key in self._ADAPTER_JSON_COLUMNS:
            values[key] = json.loads(values[key])
        return values


# -- rows shared by the writers above ---------------------------------------------------------


def _write_episode_row(conn: sqlite3.Connection, episode: Episode, turn_count: int) -> None:
    conn.execute(
        "INSERT INTO episodes (id, scenario_id, status, agent1_model, agent2_model, "
        "judge_model, turn_count, created_at, updated_at, data) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
        "status=excluded.status, agent1_model=excluded.agent1_model, "
        "agent2_model=excluded.agent2_model, judge_model=excluded.judge_model, "
        "updated_at=excluded.updated_at, data=excluded.data",
        (
            episode.id,
            episode.scenario_id,
            episode.status.value,
            episode.agent_models[0],
            episode.agent_models[1],
            episode.judge_model,
            turn_count,
            episode.created_at,
            episode.updated_at,
            episode.model_dump_json(),
        ),
    )
    conn.execute("DELETE FROM episode_tags WHERE episode_id=?", (episode.id,))
    conn.executemany(
        "INSERT INTO episode_tags (episode_id, tag) VALUES (?, ?)",
        [(episode.id, tag) for tag in dict.fromkeys(episode.tags)],
    )


def _write_turn(conn: sqlite3.Connection, turn: Turn) -> None:
    conn.execute(
        "INSERT INTO turns (episode_id, idx, agent, action_type, data) VALUES (?, ?, ?, ?, ?)",
        (turn.episode_id, turn.index, turn.agent, turn.action_type.value, turn.model_dump_json()),
    )


def _write_evaluation(conn: sqlite3.Connection, evaluation: Evaluation) -> None:
    conn.execute(
        "INSERT INTO evaluations (id, episode_id, kind, after_turn, ok, created_at, data) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            evaluation.id,
            evaluation.episode_id,
            evaluation.kind,
            evaluation.after_turn,
            int(evaluation.ok),
            evaluation.created_at,
            evaluation.model_dump_json(),
        ),
    )
