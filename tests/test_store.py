"""The SQLite store: schema versioning, WAL, ordering of turns, filters."""

from __future__ import annotations

import sqlite3

import pytest

from sotopia_pi.episode import ActionType, Episode, EpisodeStatus, Turn
from sotopia_pi.store import SCHEMA_VERSION, NotFound, Store, StoreError

from .factories import seed_store


def test_new_store_is_wal_and_at_the_latest_schema(store: Store):
    assert store.schema_version == SCHEMA_VERSION
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_store_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "future.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this sotopia-pi"):
        Store(path)


def _episode(store: Store, **kw) -> Episode:
    episode = Episode(scenario_id="bike-sale", agent_ids=["ines", "tomas"], agent_models=["embedded", "embedded"], **kw)
    store.save_episode(episode)
    return episode


def test_turns_must_arrive_in_order_and_survive_reopen(store: Store):
    seed_store(store)
    episode = _episode(store)
    store.add_turn(Turn(episode_id=episode.id, index=0, agent=0, action_type=ActionType.speak, argument="a"))
    with pytest.raises(StoreError, match="out of order"):
        store.add_turn(Turn(episode_id=episode.id, index=2, agent=0, action_type=ActionType.speak))
    reopened = Store(store.path)
    assert [t.argument for t in reopened.turns(episode.id)] == ["a"]
    assert reopened.episode_rows()[0]["turn_count"] == 1


def test_episode_filters_and_order(store: Store):
    seed_store(store)
    first = _episode(store, tags=["baseline"])
    second = _episode(store, status=EpisodeStatus.finished)
    assert [e.id for e in store.episodes()] == [second.id, first.id]
    assert [e.id for e in store.episodes(tag="baseline")] == [first.id]
    assert [r["id"] for r in store.episode_rows(status="finished")] == [second.id]
    with pytest.raises(NotFound, match="ambiguous"):
        store.episode(second.id[:8])
    store.delete_episode(first.id)
    assert store.episode(second.id[:8]).id == second.id
    with pytest.raises(NotFound):
        store.episode("nope")


def test_scenario_by_codename_and_profile_upsert_keeps_source(store: Store):
    scenario = seed_store(store)
    assert store.scenario("bike_sale").id == scenario.id
    store.save_scenario(scenario, source_record={"env_id": scenario.id})
    store.save_scenario(scenario.model_copy(update={"codename": "bike_sale_2"}))
    assert store.scenario("bike-sale").codename == "bike_sale_2"
    assert store.source_record("scenarios", scenario.id) == {"env_id": scenario.id}
