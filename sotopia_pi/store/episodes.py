"""The SQL of episode lists: one query per page, fast with thousands of episodes.

A list wants each episode's scenario name, official (terminal) scores and tags, and filters on
model, adapter and score. Loading every episode and evaluation as pydantic records for that
would take seconds with thousands of episodes; here SQLite does the join, the filtering and
the JSON extraction. `sotopia_pi.episode_list` is the engine's entry point to it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ..episode import EpisodeStatus
from . import Store


class EpisodeFilter(BaseModel):
    """Every field narrows the list; empty fields do not filter. Text matches are substrings,
    case-insensitive."""

    scenario: str = Field(default="", description="part of the scenario's codename or id")
    scenario_id: str = Field(default="", description="exactly this scenario id")
    model: str = Field(default="", description="part of either agent's model name")
    adapter: str = Field(
        default="", description="part of the adapter a turn was played with, or of an agent's +adapter="
    )
    tag: str = Field(default="", description="an exact tag")
    status: EpisodeStatus | None = None
    min_overall: float | None = Field(
        default=None, description="the better side's terminal overall score is at least this"
    )


class EpisodeRow(BaseModel):
    id: str
    scenario_id: str
    scenario: str
    status: EpisodeStatus
    agent_models: tuple[str, str]
    judge_model: str
    turn_count: int
    created_at: str
    updated_at: str = ""
    last_error: str = ""
    tags: list[str] = Field(default_factory=list)
    overall: tuple[float | None, float | None] = (None, None)
    goal: tuple[int | None, int | None] = (None, None)

    @property
    def scored(self) -> bool:
        return any(value is not None for value in self.overall)


_SELECT = """
    SELECT ep.id, ep.scenario_id, COALESCE(NULLIF(sc.codename, ''), ep.scenario_id) AS scenario,
           ep.status, ep.agent1_model, ep.agent2_model, ep.judge_model, ep.turn_count,
           ep.created_at, ep.updated_at, json_extract(ep.data, '$.last_error') AS last_error,
           (SELECT group_concat(tag, char(31)) FROM episode_tags WHERE episode_id = ep.id) AS tags,
           json_extract(t.data, '$.agents[0].overall') AS overall1,
           json_extract(t.data, '$.agents[1].overall') AS overall2,
           json_extract(t.data, '$.agents[0].scores.goal.score') AS goal1,
           json_extract(t.data, '$.agents[1].scores.goal.score') AS goal2
    FROM episodes ep
    LEFT JOIN scenarios sc ON sc.id = ep.scenario_id
    LEFT JOIN evaluations t ON t.id = (
        SELECT id FROM evaluations
        WHERE episode_id = ep.id AND kind = 'terminal'
        ORDER BY created_at DESC LIMIT 1
    )
"""

# Turns record their adapter; episodes stored before they did carry it only in the model name.
_ADAPTER_CLAUSE = """(
    ep.id IN (SELECT episode_id FROM turns WHERE lower(json_extract(data, '$.adapter')) LIKE ? ESCAPE '\\')
    OR lower(ep.agent1_model) LIKE ? ESCAPE '\\' OR lower(ep.agent2_model) LIKE ? ESCAPE '\\'
)"""


def _like(text: str) -> str:
    escaped = text.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(filters: EpisodeFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if filters.scenario.strip():
        clauses.append("(lower(ep.scenario_id) LIKE ? ESCAPE '\\' OR lower(sc.codename) LIKE ? ESCAPE '\\')")
        params += [_like(filters.scenario)] * 2
    if filters.scenario_id:
        clauses.append("ep.scenario_id = ?")
        params.append(filters.scenario_id)
    if filters.model.strip():
        clauses.append("(lower(ep.agent1_model) LIKE ? ESCAPE '\\' OR lower(ep.agent2_model) LIKE ? ESCAPE '\\')")
        params += [_like(filters.model)] * 2
    if filters.adapter.strip():
        in_name = "%+adapter=" + _like(filters.adapter)
        clauses.append(_ADAPTER_CLAUSE)
        params += [_like(filters.adapter), in_name, in_name]
    if filters.tag.strip():
        clauses.append("ep.id IN (SELECT episode_id FROM episode_tags WHERE tag = ?)")
        params.append(filters.tag.strip())
    if filters.status is not None:
        clauses.append("ep.status = ?")
        params.append(filters.status.value)
    if filters.min_overall is not None:
        clauses.append("MAX(COALESCE(overall1, -1e9), COALESCE(overall2, -1e9)) >= ?")
        params.append(filters.min_overall)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def episode_rows(store: Store, filters: EpisodeFilter, limit: int) -> list[EpisodeRow]:
    """Episodes matching `filters`, newest first, at most `limit` of them."""
    where, params = _where(filters)
    sql = _SELECT + where + " ORDER BY ep.created_at DESC, ep.id DESC LIMIT ?"
    with store.transaction() as conn:
        rows = conn.execute(sql, (*params, limit)).fetchall()
    return [_row(row) for row in rows]


def count_episode_rows(store: Store, filters: EpisodeFilter) -> int:
    where, params = _where(filters)
    with store.transaction() as conn:
        return conn.execute(f"SELECT COUNT(*) FROM ({_SELECT}{where})", params).fetchone()[0]


def _row(row: Any) -> EpisodeRow:
    return EpisodeRow(
        id=row["id"],
        scenario_id=row["scenario_id"],
        scenario=row["scenario"],
        status=row["status"],
        agent_models=(row["agent1_model"], row["agent2_model"]),
        judge_model=row["judge_model"],
        turn_count=row["turn_count"],
        created_at=row["created_at"],
        updated_at=row["updated_at"] or "",
        last_error=row["last_error"] or "",
        tags=row["tags"].split("\x1f") if row["tags"] else [],
        overall=(row["overall1"], row["overall2"]),
        goal=(row["goal1"], row["goal2"]),
    )
