"""Visibility rules, prompt layout, action parsing and the judge's score parsing."""

from __future__ import annotations

import json

import pytest

from sotopia_pi.episode import ActionType, AgentAction, Turn
from sotopia_pi.judge import (
    Dimension,
    DimensionSet,
    evaluation_schema,
    load_dimension_set,
    parse_agent_evaluation,
)
from sotopia_pi.profiles import RelationshipLevel
from sotopia_pi.prompts import (
    CLOSING_PREFIX,
    NOTHING_NEW,
    agent_messages,
    closing_block,
    history_lines,
    messages_for_turn,
    parse_action,
    partial_argument,
)
from sotopia_pi.visibility import UNKNOWN, agent_view, judge_view, render_goal

from .factories import GOOD_SCORES, bike_scenario, judge_answer, two_characters


@pytest.mark.parametrize(
    ("level", "sees_name", "sees_job", "sees_personality"),
    [
        (RelationshipLevel.stranger, False, False, False),
        (RelationshipLevel.know_by_name, True, False, False),
        (RelationshipLevel.acquaintance, True, True, False),
        (RelationshipLevel.friend, True, True, True),
        (RelationshipLevel.romantic_relationship, True, True, True),
        (RelationshipLevel.family_member, True, True, True),
    ],
)
def test_partner_background_is_cut_by_relationship(level, sees_name, sees_job, sees_personality):
    characters = two_characters()
    view = agent_view(bike_scenario(level), characters, viewer=0)
    partner = view.backgrounds[1]
    assert (partner == UNKNOWN) == (not sees_name)
    assert ("graduate student" in partner) == sees_job
    assert ("anxious about money" in partner) == sees_personality
    assert "already bought a car" not in partner  # a partner's secret is never shown
    own = view.backgrounds[0]
    assert "closing the stall" in own and "Blunt, fair-minded" in own


def test_goals_own_with_hints_partner_unknown_judge_all():
    characters = two_characters()
    scenario = bike_scenario()
    view = agent_view(scenario, characters, viewer=1)
    assert view.goals[0] == UNKNOWN
    assert view.goals[1] == "Buy the bike for at most $200 (Point out the worn tyres.)"
    judge = judge_view(scenario, characters)
    assert "You paid $180" in judge.goals[0] and "worn tyres" in judge.goals[1]
    assert "already bought a car" in judge.backgrounds[1]
    assert "closing the stall" in judge.backgrounds[0]


def test_hint_ablation_drops_only_the_named_tag():
    goal = "Win (<extra_info>You have $40.</extra_info>) (<strategy_hint>Be kind.</strategy_hint>)"
    assert render_goal(goal, shown_hints=("extra_info",)) == "Win (You have $40.)"
    nested = "Go (<extra_info>Info <clarification_hint>do not tell</clarification_hint> end</extra_info>)"
    assert render_goal(nested) == "Go (Info do not tell end)"


def _turn(index: int, kind: str, argument: str = "") -> Turn:
    return Turn(episode_id="e", index=index, agent=index % 2, action_type=ActionType(kind), argument=argument)


def test_prompt_only_grows_at_the_end_of_history():
    characters = two_characters()
    view = agent_view(bike_scenario(), characters, viewer=0)
    names = (characters[0].name, characters[1].name)
    turns = [_turn(0, "speak", "Hello"), _turn(1, "none"), _turn(2, "action", "hands over the bike")]
    early = agent_messages(names[0], view, history_lines(turns[:1], names), 2)
    later = agent_messages(names[0], view, history_lines(turns, names), 4)
    assert early[0] == later[0]
    history_part = early[1].content.split("\n\n" + CLOSING_PREFIX)[0]
    assert later[1].content.startswith(history_part)
    assert "Turn #1" not in later[1].content  # idle turns leave no line
    assert "Turn #2: Ines Varga [action] hands over the bike" in later[1].content
    assert later[1].content.rstrip().split("\n\n")[-1].startswith(f"{CLOSING_PREFIX}4.")


@pytest.mark.parametrize(
    ("text", "expected", "noted"),
    [
        ('{"action_type": "speak", "argument": "Hi"}', ("speak", "Hi"), False),
        ('Sure! {"action_type": "leave", "argument": "bye"}', ("leave", ""), False),
        ('{"action_type": "non-verbal", "argument": "nods"}', ("non-verbal communication", "nods"), True),
        ('{"action_type": "speak", "argument": "line one\nline two"}', ("speak", "line one\nline two"), False),
        ('{"action_type": "speak", "argument": "cut off', ("speak", "cut off"), False),
        ("", ("none", ""), True),
        ("Just talking, no JSON.", ("speak", "Just talking, no JSON."), True),
    ],
)
def test_parse_action_repairs_what_small_models_write(text, expected, noted):
    action, note = parse_action(text)
    assert (action.action_type.value, action.argument) == expected
    assert bool(note) == noted


def test_partial_argument_follows_the_stream():
    assert partial_argument('{"action_type": "speak", "argu') == ""
    assert partial_argument('{"action_type": "speak", "argument": "Hel') == "Hel"
    assert partial_argument('{"action_type": "speak", "argument": "say \\"hi\\" ') == 'say "hi" '


def test_sotopia_dimensions_have_exact_names_and_ranges():
    dims = {d.name: (d.low, d.high) for d in load_dimension_set("sotopia").dimensions}
    assert dims == {
        "believability": (0, 10),
        "relationship": (-5, 5),
        "knowledge": (0, 10),
        "secret": (-10, 0),
        "social_rules": (-10, 0),
        "financial_and_material_benefits": (-5, 5),
        "goal": (0, 10),
    }


def test_schema_enumerates_every_allowed_score():
    schema = evaluation_schema(load_dimension_set("sotopia"))
    assert schema["properties"]["secret"]["properties"]["score"]["enum"] == list(range(-10, 1))
    assert schema["properties"]["goal"]["properties"]["reasoning"]["maxLength"] > 0


def test_parse_evaluation_scores_overall_and_failures():
    dims = load_dimension_set("sotopia")
    result = parse_agent_evaluation(judge_answer(), dims)
    assert result.ok and result.overall == pytest.approx(sum(GOOD_SCORES.values()) / 7)
    missing = {k: v for k, v in GOOD_SCORES.items() if k != "knowledge"}
    assert parse_agent_evaluation(judge_answer(missing), dims).failure == "judge gave no score for knowledge"
    low = dict(GOOD_SCORES, relationship=-6)
    assert "outside -5..5" in parse_agent_evaluation(judge_answer(low), dims).failure
    old_style = json.dumps({k: [f"r {k}", v] for k, v in GOOD_SCORES.items()})
    assert parse_agent_evaluation(old_style, dims).scores["goal"].score == 7


def test_custom_dimension_set_is_data(isolated_home):
    folder = isolated_home / "dimensions"
    folder.mkdir()
    (folder / "talk.toml").write_text(
        'name = "talk"\n[[dimension]]\nname = "verbal_equity"\nlow = 0\nhigh = 4\n'
        'description = "Did both people get to speak?"\n'
    )
    dims = load_dimension_set("talk")
    assert [d.name for d in dims.dimensions] == ["verbal_equity"]
    schema = evaluation_schema(dims)
    assert schema["properties"]["verbal_equity"]["properties"]["score"]["enum"] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        DimensionSet(name="bad", dimension=[Dimension(name="x", description="", low=3, high=3)])


def test_action_natural_language():
    assert AgentAction(action_type="speak", argument="Hi").to_natural_language() == 'said: "Hi"'
    assert AgentAction(action_type="leave").to_natural_language() == "left the conversation"


def test_an_agents_conversation_only_grows_and_holds_its_own_answers():
    characters = two_characters()
    view = agent_view(bike_scenario(), characters, viewer=1)
    names = (characters[0].name, characters[1].name)
    turns = [_turn(0, "speak", "Hello"), _turn(1, "speak", "Hi there"), _turn(2, "none"), _turn(3, "action", "points at the bell")]
    first = messages_for_turn(names[1], view, turns[:1], names, 1)
    later = messages_for_turn(names[1], view, turns[:3], names, 1)
    assert [m.role for m in first] == ["system", "user"]
    assert "Turn #0: Ines Varga said: \"Hello\"" in first[1].content
    assert later[: len(first)] == first
    assert later[2].role == "assistant" and later[2].content == turns[1].action.to_json()
    assert later[3].content.startswith(NOTHING_NEW)  # the partner's idle turn leaves no line
    assert later[3].content.endswith(closing_block(3, names[1]))
