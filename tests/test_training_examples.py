"""Training examples: the conversation layout teaches exactly what the per-turn layout teaches."""

from __future__ import annotations

import json

import pytest

from sotopia_pi.dataset.examples import SftExample
from sotopia_pi.episode import ActionType, ChatMessage, Turn
from sotopia_pi.prompts import messages_for_turn
from sotopia_pi.training.examples import (
    build_training_examples,
    conversation_examples,
    per_turn_examples,
    split_by_episode,
    tokenize_example,
)
from sotopia_pi.visibility import agent_view
from tests.factories import bike_scenario, two_characters

torch = pytest.importorskip("torch")

SCRIPT = [
    ("speak", "Hi, is the cargo bike still for sale?"),
    ("speak", "It is. I'm asking 900, it has a new chain."),
    ("non-verbal communication", "crouches to look at the rear wheel"),
    ("speak", "The tyres look worn. Would you take 700?"),
    ("none", ""),
    ("speak", "Seven fifty and I'll throw in the rain cover."),
    ("speak", "Deal, 750 with the cover."),
    ("leave", ""),
]


def _episode_examples(episode_id: str = "ep1") -> list[SftExample]:
    characters = two_characters()
    scenario = bike_scenario()
    names = (characters[0].name, characters[1].name)
    views = [agent_view(scenario, characters, side) for side in (0, 1)]
    turns: list[Turn] = []
    examples = []
    for index, (kind, argument) in enumerate(SCRIPT):
        side = index % 2
        prompt = messages_for_turn(names[side], views[side], turns, names, side)
        turn = Turn(episode_id=episode_id, index=index, agent=side, action_type=ActionType(kind), argument=argument, prompt=prompt)
        turns.append(turn)
        if kind != "none":
            examples.append(
                SftExample(
                    id=f"{episode_id}-{side}-{index}", episode_id=episode_id, side=side, turn=index,
                    scenario_id=scenario.id, model="m", prompt=prompt, completion=turn.action.to_json(),
                )  # fmt: skip
            )
    return examples


def test_each_side_becomes_one_conversation_holding_all_its_answers():
    examples = _episode_examples()
    merged = conversation_examples(examples)
    assert len(merged) == 2
    for conversation in merged:
        side_examples = [e for e in examples if e.side == conversation.side]
        assert conversation.answers == len(side_examples)
        for example, target in zip(side_examples, conversation.targets):
            assert conversation.messages[: len(example.prompt)] == example.prompt
            assert conversation.messages[target].content == example.completion


def test_an_edited_answer_breaks_the_chain_into_separate_examples():
    examples = _episode_examples()
    first = next(e for e in examples if e.side == 0)
    first.completion = '{"action_type":"speak","argument":"Edited by a curator."}'
    merged = [c for c in conversation_examples(examples) if c.side == 0]
    assert len(merged) == 2  # the edited answer alone, then the rest chained
    assert merged[0].messages[-1].content == first.completion
    assert sum(c.answers for c in merged) == sum(1 for e in examples if e.side == 0)


def test_prompts_from_an_older_format_stay_per_turn():
    examples = _episode_examples()
    for example in examples:
        example.prompt = [example.prompt[0], ChatMessage(role="user", content=f"history up to {example.turn}")]
    assert len(conversation_examples(examples)) == len(per_turn_examples(examples)) == len(examples)


def test_split_is_by_episode_and_stable():
    examples = [e for n in range(10) for e in build_training_examples(_episode_examples(f"ep{n}"))]
    train, heldout = split_by_episode(examples, 0.2, seed=3)
    assert {e.episode_id for e in train}.isdisjoint({e.episode_id for e in heldout})
    assert len({e.episode_id for e in heldout}) == 2
    assert split_by_episode(examples, 0.2, seed=3) == (train, heldout)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tiny_model import make_tiny_model

    directory = make_tiny_model(tmp_path_factory.mktemp("tiny"))
    return AutoModelForCausalLM.from_pretrained(directory), AutoTokenizer.from_pretrained(directory)


def _answer_losses(model, tokenized) -> list[float]:
    """Mean cross-entropy of each answer span, as the trainer computes it (shifted labels)."""
    ids = torch.tensor([tokenized.input_ids])
    with torch.no_grad():
        logits = model(ids).logits[0]
    losses = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="none")
    return [losses[start - 1 : end - 1].mean().item() for start, end in tokenized.answer_spans]


def test_conversation_layout_gives_the_same_per_answer_losses(tiny):
    model, tokenizer = tiny
    examples = _episode_examples()
    per_turn = [tokenize_example(tokenizer, e) for e in per_turn_examples(examples)]
    conversations = [tokenize_example(tokenizer, c) for c in conversation_examples(examples)]
    expected = {}
    for example, tokenized in zip(examples, per_turn):
        expected[(example.side, example.turn)] = _answer_losses(model, tokenized)[0]
    got = {}
    for conversation, tokenized in zip(conversation_examples(examples), conversations):
        side_turns = [e.turn for e in examples if e.side == conversation.side]
        for turn, loss in zip(side_turns, _answer_losses(model, tokenized)):
            got[(conversation.side, turn)] = loss
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-4), key
    # and the conversation layout reads far fewer tokens for the same answers
    assert sum(len(t.input_ids) for t in conversations) < 0.6 * sum(len(t.input_ids) for t in per_turn)


def test_answer_mask_covers_the_action_and_end_of_turn_only(tiny):
    _, tokenizer = tiny
    example = per_turn_examples(_episode_examples())[0]
    tokenized = tokenize_example(tokenizer, example)
    masked = tokenizer.decode([t for t, m in zip(tokenized.input_ids, tokenized.completion_mask) if m])
    assert masked == example.messages[-1].content + "<|im_end|>"


def test_a_long_conversation_is_cut_after_the_last_answer_that_fits(tiny):
    _, tokenizer = tiny
    conversation = conversation_examples(_episode_examples())[0]
    full = tokenize_example(tokenizer, conversation)
    limit = full.answer_spans[1][1] + 3
    cut = tokenize_example(tokenizer, conversation, max_length=limit)
    assert cut.answer_spans == full.answer_spans[:2]
    assert len(cut.input_ids) == full.answer_spans[1][1]
    assert tokenize_example(tokenizer, conversation, max_length=full.answer_spans[0][0]) is None


def test_judge_examples_answer_as_the_judge_must_and_parse_back(tmp_path):
    from sotopia_pi.dataset.frozen import freeze_episode
    from sotopia_pi.judge import REASONING_MAX_CHARS, load_dimension_set, parse_agent_evaluation
    from sotopia_pi.store import Store
    from sotopia_pi.training.judge_examples import fit_reasoning, judge_examples
    from tests.curation_helpers import add_episode, seed_profiles

    store = Store(tmp_path / "s.sqlite3")
    seed_profiles(store)
    episode = add_episode(store, (9, 3))
    frozen = freeze_episode(store, episode.id)
    dimensions = load_dimension_set("sotopia")
    examples = judge_examples([frozen], [(episode.id, 0), (episode.id, 1)], dimensions)
    assert [e.side for e in examples] == [0, 1]
    for example in examples:
        answer = example.messages[-1].content
        parsed = parse_agent_evaluation(answer, dimensions)
        expected = frozen.evaluation.agents[example.side].scores
        assert {k: v.score for k, v in parsed.scores.items()} == {k: v.score for k, v in expected.items()}
        assert list(json.loads(answer)) == sorted(expected)
        assert example.messages[0].role == "system" and example.targets == [len(example.messages) - 1]
    sentence = "She kept the secret about the loan and steered the talk back to the rent, which she wanted settled today. "
    assert fit_reasoning(sentence + "Then she " + "rambled on " * 10) == sentence.strip()
    cut = fit_reasoning("word " * 60)
    assert len(cut) <= REASONING_MAX_CHARS and cut.endswith("word")
    assert fit_reasoning("  short   and   spaced ") == "short and spaced"
