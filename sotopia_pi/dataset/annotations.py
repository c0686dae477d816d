"""A curator's annotations: keep/reject decisions, tags and turn edits, kept in the store's own
tables (migration 2) so they survive restarts and never collide with what the runner writes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, Field

from ..episode import ActionType, Episode, EpisodeStatus, Turn, utc_now
from ..store import NotFound, Store
from ..store import curation as sql
from ..store.curation import WHOLE_EPISODE
from .errors import CurationError

# -- manual decisions ---------------------------------------------------------------------


class Decision(BaseModel):
    episode_id: str
    side: int | None = Field(default=None, description="0 or 1; None for the whole episode")
    decision: Literal["keep", "reject"]
    note: str = ""
    created_at: str = Field(default_factory=utc_now)


def _side_column(side: int | None) -> int:
    if side is None:
        return WHOLE_EPISODE
    if side not in (0, 1):
        raise CurationError(f"side must be 0 or 1, not {side}")
    return side


def _episode(store: Store, episode_id: str) -> Episode:
    try:
        return store.episode(episode_id)
    except NotFound as error:
        raise CurationError(str(error)) from error


def finished_episode(store: Store, episode_id: str, doing: str) -> Episode:
    """The episode, or a CurationError saying that only finished episodes can be `doing`."""
    episode = _episode(store, episode_id)
    if episode.status != EpisodeStatus.finished:
        raise CurationError(
            f"episode {episode.id} is {episode.status.value}; only finished episodes can be {doing}"
        )
    return episode


def set_decision(
    store: Store, episode_id: str, decision: Literal["keep", "reject"], side: int | None = None, note: str = ""
) -> Decision:
    """Keep or reject a whole episode (side None) or one side of it; replaces an earlier
    decision on the same target."""
    if decision not in ("keep", "reject"):
        raise CurationError(f"decision must be keep or reject, not {decision!r}")
    if decision == "keep":
        episode = finished_episode(store, episode_id, "kept")
    else:
        episode = _episode(store, episode_id)
    record = Decision(episode_id=episode.id, side=side, decision=decision, note=note)
    sql.upsert_decision(store, episode.id, _side_column(side), decision, note, record.created_at)
    return record


def clear_decision(store: Store, episode_id: str, side: int | None = None) -> bool:
    """Forget the decision on an episode or side; False if there was none."""
    episode = _episode(store, episode_id)
    return sql.delete_decision(store, episode.id, _side_column(side))


def decisions(store: Store) -> list[Decision]:
    return [
        Decision(
            episode_id=row.episode_id,
            side=None if row.side == WHOLE_EPISODE else row.side,
            decision=row.decision,
            note=row.note,
            created_at=row.created_at,
        )
        for row in sql.decision_rows(store)
    ]


def decision_map(store: Store) -> dict[tuple[str, int | None], str]:
    return {(d.episode_id, d.side): d.decision for d in decisions(store)}


def resolve_decision(
    decision_by_target: dict[tuple[str, int | None], str], episode_id: str, side: int
) -> Literal["keep", "reject"] | None:
    """The side's own decision if any, else the whole episode's."""
    found = decision_by_target.get((episode_id, side), decision_by_target.get((episode_id, None)))
    return found  # type: ignore[return-value]


# -- curator tags -------------------------------------------------------------------------


def _check_tag(tag: str) -> str:
    tag = tag.strip()
    if not tag or "," in tag:
        raise CurationError(f"tag {tag!r} must be non-empty and contain no comma")
    return tag


def add_tags(store: Store, episode_id: str, tags: Iterable[str]) -> list[str]:
    episode = _episode(store, episode_id)
    sql.insert_tags(store, episode.id, [_check_tag(tag) for tag in tags])
    return curator_tags(store).get(episode.id, [])


def remove_tags(store: Store, episode_id: str, tags: Iterable[str]) -> list[str]:
    episode = _episode(store, episode_id)
    sql.delete_tags(store, episode.id, [tag.strip() for tag in tags])
    return curator_tags(store).get(episode.id, [])


def set_tags(store: Store, episode_id: str, tags: Iterable[str]) -> list[str]:
    """Make the episode's curator tags exactly `tags` (tags the runner gave it are untouched)."""
    episode = _episode(store, episode_id)
    sql.replace_tags(store, episode.id, list(dict.fromkeys(_check_tag(tag) for tag in tags)))
    return curator_tags(store).get(episode.id, [])


def curator_tags(store: Store) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = defaultdict(list)
    for episode_id, tag in sql.tag_rows(store):
        tags[episode_id].append(tag)
    return dict(tags)


# -- turn edits ---------------------------------------------------------------------------


class TurnEdit(BaseModel):
    episode_id: str
    index: int
    original: str
    edited: str | None = Field(description="None when the edit was undone")
    created_at: str


EDITABLE_ACTIONS = frozenset({ActionType.speak, ActionType.non_verbal, ActionType.action})


def is_editable(turn: Turn) -> bool:
    """Whether a turn carries text a curator can edit."""
    return turn.action_type in EDITABLE_ACTIONS


def _write_turn(store: Store, turn: Turn, original: str, edited: str | None) -> TurnEdit:
    record = TurnEdit(
        episode_id=turn.episode_id, index=turn.index, original=original, edited=edited, created_at=utc_now()
    )
    sql.save_turn_edit(store, turn, original, edited, record.created_at)
    return record


def _turn(store: Store, episode_id: str, index: int) -> Turn:
    episode = finished_episode(store, episode_id, "edited")
    turns = store.turns(episode.id)
    if not 0 <= index < len(turns):
        raise CurationError(f"episode {episode.id} has turns 0..{len(turns) - 1}; there is no turn {index}")
    return turns[index]


def edit_turn(store: Store, episode_id: str, index: int, text: str) -> TurnEdit:
    """Replace what an agent said or did at one turn. The original argument stays in the turn
    (Turn.argument); the new text goes to Turn.edited_argument and to the edit history."""
    turn = _turn(store, episode_id, index)
    if not is_editable(turn):
        raise CurationError(
            f"turn {index} of episode {turn.episode_id} is a {turn.action_type.value!r} action, which has "
            "no text; only speak, non-verbal communication and action turns can be edited"
        )
    if not text.strip():
        raise CurationError(f"the new text for turn {index} of episode {turn.episode_id} is empty")
    turn.edited_argument = text
    return _write_turn(store, turn, turn.argument, text)


def revert_turn(store: Store, episode_id: str, index: int) -> TurnEdit:
    """Undo the edit of a turn: its original argument counts again."""
    turn = _turn(store, episode_id, index)
    if turn.edited_argument is None:
        raise CurationError(f"turn {index} of episode {turn.episode_id} has no edit to undo")
    turn.edited_argument = None
    return _write_turn(store, turn, turn.argument, None)


def turn_edits(store: Store, episode_id: str | None = None) -> list[TurnEdit]:
    """The edit history, oldest first."""
    if episode_id is not None:
        episode_id = _episode(store, episode_id).id
    return [
        TurnEdit(episode_id=row.episode_id, index=row.index, original=row.original, edited=row.edited, created_at=row.created_at)
        for row in sql.turn_edit_rows(store, episode_id)
    ]
