"""What each participant may see. Pure functions, no I/O.

Paper-era SOTOPIA rules: an agent sees its own full profile (secret included) and its own goal
with its hints; the partner's profile is cut by their relationship level and the partner's goal
is unknown. The judge sees everything: both profiles, both secrets, both goals with hints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .profiles import Character, RelationshipLevel, Scenario

UNKNOWN = "Unknown"
HINT_TAGS = ("extra_info", "strategy_hint", "clarification_hint")
# One hint tag as written in goals: group 1 is "/" for a closing tag, group 2 the tag name.
HINT_TAG_MARKUP = re.compile(r"<(/?)(" + "|".join(HINT_TAGS) + r")>")

_TAG = re.compile(r"</?\s*(" + "|".join(HINT_TAGS) + r")\s*>")
_TAG_BLOCK = {tag: re.compile(rf"<{tag}>.*?</{tag}>", re.S) for tag in HINT_TAGS}


def render_goal(goal: str, shown_hints: tuple[str, ...] = HINT_TAGS) -> str:
    """A goal as its owner reads it: hint markup removed, hint text kept for the tags in
    `shown_hints` and dropped for the others (how a no-hint ablation is run)."""
    text = goal
    for tag in HINT_TAGS:
        if tag not in shown_hints:
            text = _TAG_BLOCK[tag].sub("", text)
    text = _TAG.sub("", text)
    text = text.replace("()", "").replace("( )", "")
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _gender_word(gender: str) -> str:
    return {"man": "male", "woman": "female", "nonbinary": "nonbinary"}.get(
        gender.strip().lower(), gender.strip().lower()
    )


def public_summary(character: Character) -> str:
    """What an acquaintance knows: age, gender, occupation, pronouns and public facts."""
    pieces = [character.name]
    details = " ".join(
        part
        for part in (
            f"{character.age}-year-old" if character.age else "",
            _gender_word(character.gender),
            character.occupation.lower(),
        )
        if part
    )
    sentence = f"{character.name} is a {details}." if details else f"{character.name}."
    pieces = [sentence]
    if character.gender_pronoun:
        pieces.append(f"{character.gender_pronoun} pronouns.")
    if character.public_info:
        pieces.append(character.public_info.strip())
    return " ".join(pieces)


def background(character: Character, level: RelationshipLevel | None) -> str:
    """A character's background as seen by someone at `level`; None means the character itself
    (or the judge), who sees everything including the secret."""
    if level is RelationshipLevel.stranger:
        return UNKNOWN
    if level is RelationshipLevel.know_by_name:
        return character.name
    text = public_summary(character)
    if level is RelationshipLevel.acquaintance:
        return text
    if character.personality_and_values:
        text += f" Personality and values: {character.personality_and_values.strip()}"
    if level is None and character.secret:
        text += f" {character.first_name}'s secret: {character.secret.strip()}"
    return text


@dataclass(frozen=True)
class View:
    """The rendered context for one viewer: who takes part, their backgrounds and goals."""

    scenario: str
    names: tuple[str, str]
    backgrounds: tuple[str, str]
    goals: tuple[str, str]

    def render(self) -> str:
        lines = [
            f"Scenario: {self.scenario.strip()}",
            f"Participants: {self.names[0]} and {self.names[1]}",
        ]
        for name, text in zip(self.names, self.backgrounds):
            lines.append(f"{name}'s background: {text}")
        for name, goal in zip(self.names, self.goals):
            lines.append(f"{name}'s goal: {goal}")
        return "\n".join(lines)


def agent_view(
    scenario: Scenario,
    characters: tuple[Character, Character],
    viewer: int,
    shown_hints: tuple[str, ...] = HINT_TAGS,
) -> View:
    """What agent `viewer` (0 or 1) may see at the start of the episode."""
    if viewer not in (0, 1):
        raise ValueError(f"viewer must be 0 or 1, not {viewer}")
    level = RelationshipLevel(scenario.relationship)
    backgrounds = tuple(
        background(character, None if slot == viewer else level)
        for slot, character in enumerate(characters)
    )
    goals = tuple(
        render_goal(goal, shown_hints) if slot == viewer else UNKNOWN
        for slot, goal in enumerate(scenario.agent_goals)
    )
    return View(
        scenario=scenario.scenario,
        names=(characters[0].name, characters[1].name),
        backgrounds=backgrounds,  # type: ignore[arg-type]
        goals=goals,  # type: ignore[arg-type]
    )


def judge_view(scenario: Scenario, characters: tuple[Character, Character]) -> View:
    """The omniscient view: full profiles with secrets and both goals with all hints."""
    return View(
        scenario=scenario.scenario,
        names=(characters[0].name, characters[1].name),
        backgrounds=(background(characters[0], None), background(characters[1], None)),
        goals=(render_goal(scenario.agent_goals[0]), render_goal(scenario.agent_goals[1])),
    )
