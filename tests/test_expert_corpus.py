"""The shipped expert corpus holds what issue 11 asks for, and the checker catches bad episodes."""

from __future__ import annotations

import json
import shutil

import pytest

from sotopia_pi.library import load_library
from sotopia_pi.library.expert_corpus import CorpusError, corpus_dir, corpus_summary, load_corpus
from sotopia_pi.profiles import RelationshipLevel


def test_the_shipped_corpus_is_complete_and_valid():
    episodes = load_corpus()
    summary = corpus_summary(episodes)
    assert summary["expert"] >= 150 and summary["poor"] >= 40
    assert summary["scenarios"] >= 40 and len(summary["heldout_scenarios"]) >= 8
    assert summary["expert_turns_mean"] >= 8
    expert_turns = [len(e.episode.turns) for e in episodes if e.episode.quality == "expert"]
    assert min(expert_turns) >= 6 and max(expert_turns) <= 20
    library = load_library()
    levels = {RelationshipLevel(library.scenario(e.scenario).relationship) for e in episodes}
    assert levels == set(RelationshipLevel)
    assert len({e.episode.flaw for e in episodes if e.episode.flaw}) >= 6
    goals = [judgment["goal"].score for e in episodes for judgment in e.episode.evaluation]
    assert min(goals) <= 1 and max(goals) == 10  # the judgments use the whole range


def _one_file(tmp_path, mutate):
    source = json.loads((corpus_dir() / "adopt_rescue_dog.json").read_text())
    source["episodes"] = source["episodes"][:1]
    mutate(source["episodes"][0])
    (tmp_path / "adopt_rescue_dog.json").write_text(json.dumps(source))
    return tmp_path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.update(agents=[e["agents"][0], "nobody-at-all"]), "may not play adopt_rescue_dog in this order"),
        (lambda e: e["evaluation"][0]["goal"].update(score=11), "goal = 11 is outside 0..10"),
        (lambda e: e["evaluation"][1].pop("secret"), "evaluation[1] lacks secret"),
        (lambda e: e["turns"].insert(0, {"action_type": "leave", "argument": ""}), "turn 0 leaves"),
        (lambda e: e.update(turns=e["turns"][:3]), "at least 6 turns"),
        (lambda e: e["turns"][0].update(argument="x" * 301), "at most 300 characters"),
    ],
)
def test_bad_episodes_are_named_with_their_file_and_problem(tmp_path, mutate, message):
    folder = _one_file(tmp_path, mutate)
    with pytest.raises(CorpusError) as caught:
        load_corpus(folder)
    assert "adopt_rescue_dog.json" in str(caught.value) and message in str(caught.value)


def test_an_unchanged_copy_passes(tmp_path):
    shutil.copy(corpus_dir() / "adopt_rescue_dog.json", tmp_path)
    assert {e.scenario for e in load_corpus(tmp_path)} == {"adopt_rescue_dog"}
