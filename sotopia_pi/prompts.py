"""Prompts for agents and the judge, and the parsing of what models answer. Pure functions.

An agent's prompt is one conversation that only ever grows (`messages_for_turn`). The system
message holds the role-play instructions and the context the agent may see; it never changes
during an episode. Each of the agent's turns adds a user message (the "Turn #k: ..." lines of
what happened since its last turn, then a closing block that starts with "You are at Turn #")
and, once it has acted, an assistant message with its action as JSON. A backend that keeps the
agent's KV cache therefore re-reads only the newest user message, and one side's per-turn
training examples are prefixes of one conversation. (`agent_messages`, the older two-message
layout with the whole history in one user message, is kept for prompts stored by earlier versions
and for tools that want the history as plain text.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from pydantic import ValidationError

from .episode import ACTION_TYPES, ARGUMENT_MAX_CHARS, ActionType, AgentAction, ChatMessage, Turn
from .model_text import clean_text, one_line, read_json_object
from .visibility import View

HISTORY_HEADER = "Conversation so far:"
NO_HISTORY = "(Nothing has happened yet. You act first.)"
CLOSING_PREFIX = "You are at Turn #"


def system_prompt(name: str, view: View) -> str:
    return (
        f"You are {name}. You are taking part in a social interaction and you stay in character as "
        f"{name} for the whole of it: speak and act as {name} would, with their personality, their "
        "background and their own goal in mind. Your goal is private: the other person does not "
        "know it, and you do not know theirs. Be natural and brief, react to what the other person "
        "actually said, and do not repeat yourself.\n\n"
        f"On each turn you choose one action type: {', '.join(ACTION_TYPES)}. To talk, use speak "
        "and put your own words, in character, in the argument. For a gesture or a facial "
        "expression use non-verbal communication; for a physical deed use action; to end the "
        "conversation use leave; to let the turn pass use none (both with an empty argument).\n\n"
        "What you know about this interaction:\n"
        f"{view.render()}"
    )


def turn_line(turn_index: int, name: str, action: AgentAction) -> str:
    """One line of a transcript; the argument is folded onto that line, so a reply holding a
    newline and "Turn #k: ..." cannot pass for a turn of its own."""
    shown = action.model_copy(update={"argument": one_line(action.argument)})
    return f"Turn #{turn_index}: {one_line(name)} {shown.to_natural_language()}"


def history_lines(turns: Sequence[Turn], names: Sequence[str]) -> list[str]:
    """The dialogue as both agents saw it; idle turns leave no line."""
    return [
        turn_line(turn.index, names[turn.agent], turn.action)
        for turn in turns
        if turn.action_type != ActionType.none
    ]


def closing_block(turn_index: int, name: str) -> str:
    """Short on purpose: it is re-read on every turn, after the cached history."""
    return (
        f"{CLOSING_PREFIX}{turn_index}. What does {name} do or say now? Answer with one JSON "
        'object with the keys "action_type" and "argument", and nothing else.'
    )


def agent_messages(
    name: str, view: View, history: Sequence[str], turn_index: int
) -> list[ChatMessage]:
    body = "\n".join(history) if history else NO_HISTORY
    user = f"{HISTORY_HEADER}\n{body}\n\n{closing_block(turn_index, name)}"
    return [
        ChatMessage(role="system", content=system_prompt(name, view)),
        ChatMessage(role="user", content=user),
    ]


NOTHING_NEW = "(Nothing has happened since your last turn.)"


def _reply_text(turn: Turn) -> str:
    """An agent's own earlier turn as it appears in its conversation: the action as JSON."""
    return turn.action.to_json()


def messages_for_turn(name: str, view: View, turns: Sequence[Turn], names: Sequence[str], side: int) -> list[ChatMessage]:
    """What agent `side` is given at turn len(turns): one conversation that only ever grows.

    The system message holds the instructions and the context. Each of the agent's turns is one
    user message (what happened since its previous turn, then the closing block) followed, once
    played, by its own action as JSON in an assistant message. So the prompt of a later turn
    starts with the earlier prompt plus the agent's answer: a backend keeps its KV cache across
    the whole episode, and one side's per-turn training examples are prefixes of a single
    conversation (training on that conversation once teaches every answer).
    """
    index = len(turns)
    messages = [ChatMessage(role="system", content=system_prompt(name, view))]
    pending: list[Turn] = []
    first = True
    for turn in turns:
        if turn.agent != side:
            pending.append(turn)
            continue
        messages.append(ChatMessage(role="user", content=_update(pending, names, turn.index, name, first)))
        messages.append(ChatMessage(role="assistant", content=_reply_text(turn)))
        pending, first = [], False
    messages.append(ChatMessage(role="user", content=_update(pending, names, index, name, first)))
    return messages


def _update(pending: Sequence[Turn], names: Sequence[str], turn_index: int, name: str, first: bool) -> str:
    lines = history_lines(pending, names)
    if first:
        body = f"{HISTORY_HEADER}\n" + ("\n".join(lines) if lines else NO_HISTORY)
    else:
        body = "\n".join(lines) if lines else NOTHING_NEW
    return f"{body}\n\n{closing_block(turn_index, name)}"


# -- parsing agent output -----------------------------------------------------------------

_TYPE_ALIASES = {
    "say": ActionType.speak,
    "talk": ActionType.speak,
    "speech": ActionType.speak,
    "non-verbal": ActionType.non_verbal,
    "nonverbal": ActionType.non_verbal,
    "non verbal communication": ActionType.non_verbal,
    "gesture": ActionType.non_verbal,
    "act": ActionType.action,
    "exit": ActionType.leave,
    "quit": ActionType.leave,
    "nothing": ActionType.none,
    "": ActionType.none,
}


def load_json_object(text: str) -> dict | None:
    """The first JSON object in a model's text, repairing what small models get wrong
    (code fences, trailing commas, unquoted keys, cut-off strings). None if there is none;
    never raises (see `model_text.read_json`)."""
    return read_json_object(text).value


def parse_action(text: str) -> tuple[AgentAction, str]:
    """Turn a model's answer into an action, and say what had to be repaired ("" if nothing).

    Plain prose with no JSON becomes speech: a model that forgot the format still meant to say
    something, and turning it into "none" would end the episode as stale.
    """
    text = clean_text(text if isinstance(text, str) else "")
    read = read_json_object(text)
    data = read.value
    if data is None:
        prose = text.strip()
        if not prose:
            return AgentAction(action_type=ActionType.none), "empty output; taken as none"
        if prose.lstrip().startswith(("{", "[")):
            prose = prose[:ARGUMENT_MAX_CHARS]
            return AgentAction(action_type=ActionType.speak, argument=prose), f"{read.problem}; taken as speech"
        return AgentAction(action_type=ActionType.speak, argument=prose), "no JSON; taken as speech"
    if "properties" in data and isinstance(data["properties"], dict):
        data = data["properties"]
    raw_type = str(data.get("action_type", "")).strip().lower()
    argument = data.get("argument", "")
    argument = argument if isinstance(argument, str) else _as_text(argument)
    note = ""
    try:
        action_type = ActionType(raw_type)
    except ValueError:
        action_type = _TYPE_ALIASES.get(raw_type, ActionType.speak if argument else ActionType.none)
        note = f"unknown action type {raw_type!r}; taken as {action_type.value}"
    if action_type in (ActionType.none, ActionType.leave):
        argument = ""
    try:
        return AgentAction(action_type=action_type, argument=argument.strip()), note
    except ValidationError as error:  # pragma: no cover - the fields above are always valid
        return AgentAction(action_type=ActionType.none), f"invalid action: {error}"


def _as_text(value: object) -> str:
    """A non-string argument as JSON text (numbers too long to print become their type)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):
        return type(value).__name__


_PARTIAL_ARGUMENT = re.compile(r'"argument"\s*:\s*"((?:[^"\\]|\\.)*)', re.S)


def partial_argument(streamed: str) -> str:
    """The argument text so far, from a JSON action that is still being generated."""
    match = _PARTIAL_ARGUMENT.search(streamed)
    if not match:
        return ""
    raw = match.group(1)
    if raw.endswith("\\"):
        raw = raw[:-1]
    try:
        return clean_text(json.loads(f'"{raw}"', strict=False))
    except json.JSONDecodeError:
        return clean_text(raw.replace('\\"', '"').replace("\\n", "\n"))
