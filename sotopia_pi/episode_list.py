"""Episode lists, for every place that lists episodes: the TUI's inspector and curation
browsers and `sotopia-pi episodes list`. The SQL lives in the store (store/episodes.py)."""

from __future__ import annotations

from .store import Store
from .store.episodes import EpisodeFilter, EpisodeRow, count_episode_rows, episode_rows

__all__ = ["DEFAULT_LIMIT", "EpisodeFilter", "EpisodeRow", "count_episodes", "list_episodes"]

DEFAULT_LIMIT = 500


def list_episodes(
    store: Store, filters: EpisodeFilter | None = None, limit: int = DEFAULT_LIMIT
) -> list[EpisodeRow]:
    """Episodes matching `filters`, newest first, at most `limit` of them. Episodes whose
    runner died are marked paused first, so a list never shows a dead one as running."""
    store.reclaim_interrupted()
    return episode_rows(store, filters or EpisodeFilter(), limit)


def count_episodes(store: Store, filters: EpisodeFilter | None = None) -> int:
    return count_episode_rows(store, filters or EpisodeFilter())
