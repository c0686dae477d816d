"""Who played a side: a person, a model, or both in turn. The episode record keeps the model a
side was set to; the turns say who actually played (Turn.by_human). Screens show the latter."""

from __future__ import annotations

from collections.abc import Iterable

from sotopia_pi.backends import parse_model_name
from sotopia_pi.episode import Turn

PERSON = "person"


def side_players(turns: Iterable[Turn]) -> dict[int, tuple[bool, bool]]:
    """Per side that has turns: (a person played some, a model played some)."""
    players: dict[int, tuple[bool, bool]] = {}
    for turn in turns:
        person, model = players.get(turn.agent, (False, False))
        players[turn.agent] = (person or turn.by_human, model or not turn.by_human)
    return players


def is_person_model(model: str) -> bool:
    try:
        return parse_model_name(model).is_human
    except ValueError:  # a name that no longer parses is still a model's name
        return False


def played_by(model: str, person: bool, by_model: bool, shorten=lambda name: name) -> str:
    """"person", the model's name, or "person + model" when both played turns of the side.
    A side set to a model that a person played all along is the person's."""
    if is_person_model(model) or (person and not by_model):
        return PERSON
    if person:
        return f"{PERSON} + {shorten(model)}"
    return shorten(model)
