"""Filters, manual decisions, curator tags and turn edits over episodes of known scores."""

from __future__ import annotations

import pytest

from sotopia_pi.dataset import annotations, candidates, frozen, selection
from sotopia_pi.dataset.candidates import Candidate, load_candidates
from sotopia_pi.dataset.errors import CurationError
from sotopia_pi.dataset.examples import estimate_tokens
from sotopia_pi.dataset.filters import (
    AdapterIs,
    BestSide,
    Cutoff,
    DateRange,
    HumanPlayed,
    ManuallyKept,
    ModelIs,
    TagIs,
    TopFraction,
    parse_filter,
    top_fraction,
)
from sotopia_pi.dataset.selection import select
from sotopia_pi.episode import EpisodeStatus
from sotopia_pi.store import Store

from .curation_helpers import DEFAULT_ACTIONS, add_episode, examples_per_side, seed_profiles


@pytest.fixture
def seeded(store: Store) -> Store:
    seed_profiles(store)
    return store


def kept(filters, store: Store) -> set[tuple[str, int]]:
    return set(select(load_candidates(store), filters).kept)


# -- best side per scenario ---------------------------------------------------------------


def test_best_side_takes_highest_goal_per_scenario_and_side(seeded: Store):
    low = add_episode(seeded, (6, 9), minutes=0)
    high = add_episode(seeded, (8, 3), minutes=1)
    last = add_episode(seeded, (7, 4), minutes=2)
    other = add_episode(seeded, (2, 2), scenario_id="bike-swap", minutes=3)
    assert kept([BestSide()], seeded) == {(high.id, 0), (low.id, 1), (other.id, 0), (other.id, 1)}
    assert (last.id, 0) not in kept([BestSide()], seeded)


def test_best_side_breaks_goal_ties_by_overall_then_earlier_episode(seeded: Store):
    add_episode(seeded, (8, 5), overalls=(2.5, 3.0), minutes=9)  # stored first, but created later
    first = add_episode(seeded, (8, 5), overalls=(2.0, 3.0), minutes=0)
    better_overall = add_episode(seeded, (8, 5), overalls=(2.5, 3.0), minutes=1)
    add_episode(seeded, (7, 4), overalls=(9.0, 9.0), minutes=3)  # best overall, lower goal
    assert kept([BestSide()], seeded) == {(better_overall.id, 0), (first.id, 1)}


def test_best_side_never_picks_an_episode_whose_judge_failed(seeded: Store):
    judged = add_episode(seeded, (5, 5), minutes=0)
    add_episode(seeded, (10, 10), failed_side=1, minutes=1)  # side 0 scored 10, but the judge failed
    add_episode(seeded, None, minutes=2)  # never judged
    assert kept([BestSide()], seeded) == {(judged.id, 0), (judged.id, 1)}


def test_best_side_by_another_dimension(seeded: Store):
    a = add_episode(seeded, (9, 9), overalls=(1.0, 1.0), minutes=0)
    b = add_episode(seeded, (3, 3), overalls=(4.0, 2.0), minutes=1)
    assert kept([BestSide(by="overall")], seeded) == {(b.id, 0), (b.id, 1)}
    assert kept([BestSide(by="goal")], seeded) == {(a.id, 0), (a.id, 1)}


# -- cutoff and balance -------------------------------------------------------------------


def test_cutoff_keeps_scores_equal_to_the_threshold(seeded: Store):
    at = add_episode(seeded, (7, 6), minutes=0)
    above = add_episode(seeded, (10, 8), minutes=1)
    add_episode(seeded, (10, 10), failed_side=0, minutes=2)
    assert kept([Cutoff(threshold=7)], seeded) == {(at.id, 0), (above.id, 0), (above.id, 1)}
    assert kept([Cutoff(threshold=7.5)], seeded) == {(above.id, 0), (above.id, 1)}
    assert kept([Cutoff(threshold=8)], seeded) == {(above.id, 0), (above.id, 1)}
    assert kept([Cutoff(threshold=9)], seeded) == {(above.id, 0)}


def test_cutoff_on_a_negative_dimension(seeded: Store):
    add_episode(seeded, (5, 5), minutes=0)
    assert len(kept([Cutoff(dimension="secret", threshold=0)], seeded)) == 2
    assert kept([Cutoff(dimension="secret", threshold=0.5)], seeded) == set()


def test_balance_trims_the_larger_side_to_the_smaller_keeping_the_best(seeded: Store):
    e1 = add_episode(seeded, (9, 8), minutes=0)
    add_episode(seeded, (7, 2), minutes=1)
    e3 = add_episode(seeded, (8, 7), minutes=2)
    add_episode(seeded, (8, 1), scenario_id="bike-swap", minutes=3)  # the other side never passes
    add_episode(seeded, (9, 6), scenario_id="bike-swap", minutes=4)
    unbalanced = kept([Cutoff(threshold=7)], seeded)
    assert len(unbalanced) == 7
    balanced = kept([Cutoff(threshold=7, balance=True)], seeded)
    assert balanced == {(e1.id, 0), (e3.id, 0), (e1.id, 1), (e3.id, 1)}


def test_balance_keeps_the_higher_score_when_trimming(seeded: Store):
    e1 = add_episode(seeded, (7, 9), minutes=0)
    e2 = add_episode(seeded, (10, 2), minutes=1)
    add_episode(seeded, (8, 2), minutes=2)
    assert kept([Cutoff(threshold=7, balance=True)], seeded) == {(e2.id, 0), (e1.id, 1)}


# -- top fraction -------------------------------------------------------------------------


def test_top_fraction_rounds_up_and_pools_both_sides(seeded: Store):
    episodes = [add_episode(seeded, (goal, goal - 1), minutes=goal) for goal in (1, 3, 5, 7, 9)]
    # ten judged sides: 20% is two, the goals 9 (side 0) and 8 (side 1) of the last episode
    assert kept([TopFraction(fraction=0.2)], seeded) == {(episodes[4].id, 0), (episodes[4].id, 1)}
    assert len(kept([TopFraction(fraction=0.7)], seeded)) == 7
    assert len(kept([TopFraction(fraction=0.25)], seeded)) == 3  # 2.5 rounds up
    per_side = kept([TopFraction(fraction=0.2, per_side=True)], seeded)
    assert per_side == {(episodes[4].id, 0), (episodes[4].id, 1)}
    assert kept([TopFraction(fraction=0.4, per_side=True)], seeded) == {
        (episodes[4].id, 0),
        (episodes[3].id, 0),
        (episodes[4].id, 1),
        (episodes[3].id, 1),
    }


def test_top_fraction_count_is_not_thrown_off_by_float_error():
    candidates = [
        Candidate(
            episode_id=f"E{i:02}",
            side=i % 2,
            scenario_id="s",
            model="embedded",
            base_model="embedded",
            created_at="2025-01-01T00:00:00+00:00",
            scores={"goal": float(i)},
            overall=float(i),
        )
        for i in range(25)
    ]
    # 0.28 x 25 is 7.000000000000001 in floating point; it must still keep 7, the seven best
    assert top_fraction(candidates, 0.28) == {(f"E{i:02}", i % 2) for i in range(18, 25)}


def test_top_fraction_is_per_scenario_and_skips_failed_judges(seeded: Store):
    a = add_episode(seeded, (2, 2), minutes=0)
    add_episode(seeded, (10, 10), failed_side=0, minutes=1)
    b = add_episode(seeded, (1, 1), scenario_id="bike-swap", minutes=2)
    assert kept([TopFraction(fraction=0.5)], seeded) == {(a.id, 0), (b.id, 0)}


# -- metadata filters ---------------------------------------------------------------------


def _swap_side_from(store: Store, episode_id: str, side: int, first_index: int, model: str, adapter: str) -> None:
    """Rewrite a side's turns from `first_index` on as if its adapter had been swapped there."""
    for turn in store.turns(episode_id):
        if turn.agent == side and turn.index >= first_index:
            store.update_turn(turn.model_copy(update={"model": model, "adapter": adapter}))


def test_a_side_is_found_by_every_adapter_its_turns_ran_not_by_the_episode_model(seeded: Store):
    swapped = add_episode(seeded, (6, 6), models=("embedded+adapter=round1", "embedded"))
    _swap_side_from(seeded, swapped.id, 0, 4, "embedded+adapter=/runs/adapters/round2/v1/adapter.gguf", "round2@v1")
    [side0, side1] = candidates.episode_candidates(seeded, swapped.id)
    assert [(p.model, p.adapter) for p in side0.players] == [
        ("embedded+adapter=round1", "round1"),
        ("embedded+adapter=/runs/adapters/round2/v1/adapter.gguf", "round2@v1"),
    ]
    assert (side0.base_model, side0.adapter) == ("embedded", "round2@v1")  # the last turn's, not the episode's
    assert (side1.adapter, [p.adapter for p in side1.players]) == (None, [""])
    assert kept([AdapterIs(adapter="round1")], seeded) == {(swapped.id, 0)}
    assert kept([AdapterIs(adapter="round2@v1")], seeded) == {(swapped.id, 0)}
    assert kept([AdapterIs(adapter=None)], seeded) == {(swapped.id, 1)}
    assert kept([ModelIs(model="embedded")], seeded) == {(swapped.id, 0), (swapped.id, 1)}


def test_a_side_swapped_before_its_first_turn_is_filed_under_the_adapter_that_played(seeded: Store):
    episode = add_episode(seeded, (6, 6), models=("embedded", "embedded"))
    _swap_side_from(seeded, episode.id, 1, 0, "embedded+adapter=late", "late")
    assert kept([AdapterIs(adapter="late")], seeded) == {(episode.id, 1)}
    assert kept([AdapterIs(adapter=None)], seeded) == {(episode.id, 0)}


def test_turns_stored_before_turns_named_their_adapter_take_it_from_the_model_name(seeded: Store):
    old = add_episode(seeded, (6, 6), models=("embedded+adapter=/ad/legacy", "embedded"))
    with seeded.transaction() as conn:  # as a store written before Turn.adapter existed holds them
        conn.execute("UPDATE turns SET data=json_remove(data, '$.adapter') WHERE episode_id=?", (old.id,))
    assert kept([AdapterIs(adapter="legacy")], seeded) == {(old.id, 0)}
    assert kept([AdapterIs(adapter=None)], seeded) == {(old.id, 1)}


def test_a_side_a_person_played_throughout_keeps_the_model_it_was_set_to(seeded: Store):
    episode = add_episode(seeded, (6, 6), models=("embedded", "embedded+adapter=set"), human_side=1)
    side1 = candidates.episode_candidates(seeded, episode.id)[1]
    assert (side1.by_human, side1.model, side1.adapter) == (True, "embedded+adapter=set", None)
    assert kept([AdapterIs(adapter=None)], seeded) == {(episode.id, 0), (episode.id, 1)}

def test_model_adapter_tag_date_and_human_filters(seeded: Store):
    base = add_episode(seeded, (5, 5), models=("embedded", "gguf:/m/q.gguf"), tags=("batch-a",), minutes=0)
    tuned = add_episode(
        seeded, (5, 5), models=("embedded+adapter=/ad/round1", "embedded"), minutes=60 * 24 * 3
    )
    human = add_episode(seeded, (5, 5), human_side=1, minutes=60 * 24 * 10)
    assert kept([ModelIs(model="gguf:/m/q.gguf")], seeded) == {(base.id, 1)}
    assert (tuned.id, 0) in kept([ModelIs(model="embedded")], seeded)
    assert kept([ModelIs(model="embedded+adapter=/ad/round1")], seeded) == {(tuned.id, 0)}
    assert kept([AdapterIs(adapter="round1")], seeded) == {(tuned.id, 0)}
    assert kept([AdapterIs(adapter="/ad/round1/")], seeded) == {(tuned.id, 0)}
    assert (tuned.id, 0) not in kept([AdapterIs(adapter=None)], seeded)
    assert kept([TagIs(tags=["batch-a", "nothing"])], seeded) == {(base.id, 0), (base.id, 1)}
    assert kept([HumanPlayed()], seeded) == {(human.id, 1)}
    # bare dates cover the whole day, both ends inclusive
    assert kept([DateRange(since="2025-03-04")], seeded) == {(tuned.id, 0), (tuned.id, 1), (human.id, 0), (human.id, 1)}
    assert kept([DateRange(until="2025-03-04")], seeded) == {(base.id, 0), (base.id, 1), (tuned.id, 0), (tuned.id, 1)}
    assert kept([DateRange(since="2025-03-02", until="2025-03-04")], seeded) == {(tuned.id, 0), (tuned.id, 1)}
    assert kept([DateRange(until="2025-03-01T11:59:00+00:00")], seeded) == set()


def test_unfinished_episodes_are_no_candidates(seeded: Store):
    done = add_episode(seeded, (5, 5), minutes=0)
    add_episode(seeded, (9, 9), status=EpisodeStatus.running, minutes=1)
    add_episode(seeded, (9, 9), status=EpisodeStatus.failed, minutes=2)
    assert {c.episode_id for c in load_candidates(seeded)} == {done.id}


def test_filters_compose_in_order(seeded: Store):
    a = add_episode(seeded, (9, 9), models=("gguf:/big.gguf", "gguf:/big.gguf"), minutes=0)
    b = add_episode(seeded, (6, 6), minutes=1)
    model_then_best = kept([ModelIs(model="embedded"), BestSide()], seeded)
    best_then_model = kept([BestSide(), ModelIs(model="embedded")], seeded)
    assert model_then_best == {(b.id, 0), (b.id, 1)}
    assert best_then_model == set()
    selection = select(load_candidates(seeded), [BestSide(), Cutoff(threshold=7)])
    assert [(s.before, s.after) for s in selection.steps] == [(4, 2), (2, 2)]
    assert set(selection.kept) == {(a.id, 0), (a.id, 1)}
    assert "highest goal" in selection.steps[0].explanation


def test_a_misspelt_dimension_is_an_error_not_an_empty_selection(seeded: Store):
    add_episode(seeded, (5, 5))
    with pytest.raises(CurationError, match="gaol"):
        select(load_candidates(seeded), [Cutoff(dimension="gaol", threshold=1)])


def test_parse_filter_grammar():
    assert parse_filter("best-side") == BestSide()
    assert parse_filter("best-side:overall") == BestSide(by="overall")
    assert parse_filter("cutoff:goal>=7") == Cutoff(dimension="goal", threshold=7)
    assert parse_filter("cutoff:secret>=-2:balance") == Cutoff(dimension="secret", threshold=-2, balance=True)
    assert parse_filter("top:20%") == TopFraction(fraction=0.2)
    assert parse_filter("top:0.5:overall:per-side") == TopFraction(fraction=0.5, by="overall", per_side=True)
    assert parse_filter("model:openai:qwen@http://127.0.0.1:8000/v1") == ModelIs(model="openai:qwen@http://127.0.0.1:8000/v1")
    assert parse_filter("adapter:none") == AdapterIs(adapter=None)
    assert parse_filter("tag:a,b") == TagIs(tags=["a", "b"])
    assert parse_filter("since:2025-01-01") == DateRange(since="2025-01-01")
    assert parse_filter("human") == HumanPlayed()
    assert parse_filter("kept") == ManuallyKept()
    for bad, words in [
        ("cutoff:goal>7", "cutoff:DIM>=N"),
        ("top:1.5", "fraction"),
        ("since:yesterday", "ISO date"),
        ("best-side:Goal!", "dimension name"),
        ("sorcery", "unknown kind"),
    ]:
        with pytest.raises(CurationError, match=words):
            parse_filter(bad)


# -- manual decisions, tags, edits --------------------------------------------------------


def test_rejecting_the_best_lets_the_next_best_in_and_keep_adds_back(seeded: Store):
    best = add_episode(seeded, (9, 9), minutes=0)
    second = add_episode(seeded, (8, 8), minutes=1)
    weak = add_episode(seeded, (1, 1), minutes=2)
    annotations.set_decision(seeded, best.id, "reject", side=0)
    annotations.set_decision(seeded, weak.id, "keep", side=1)
    assert kept([BestSide()], seeded) == {(second.id, 0), (best.id, 1), (weak.id, 1)}
    selection = select(load_candidates(seeded), [BestSide()])
    assert (selection.rejected, selection.added_by_keep) == (1, 1)
    assert kept([ManuallyKept()], seeded) == {(weak.id, 1)}


def test_a_side_decision_overrides_the_episode_decision(seeded: Store):
    episode = add_episode(seeded, (9, 9))
    annotations.set_decision(seeded, episode.id, "reject")
    annotations.set_decision(seeded, episode.id, "keep", side=1)
    assert kept([], seeded) == {(episode.id, 1)}
    assert annotations.clear_decision(seeded, episode.id, side=1)
    assert kept([], seeded) == set()
    assert not annotations.clear_decision(seeded, episode.id, side=1)


def test_decisions_tags_and_edits_survive_reopening_the_store(seeded: Store):
    episode = add_episode(seeded, (4, 4), tags=("runner-tag",))
    annotations.set_decision(seeded, episode.id[:12], "reject", side=0, note="rude")
    annotations.add_tags(seeded, episode.id, ["gold", "round-2"])
    annotations.edit_turn(seeded, episode.id, 1, "Two hundred and eighty, final offer.")
    path = seeded.path
    seeded.close()
    with Store(path) as reopened:
        [decision] = annotations.decisions(reopened)
        assert (decision.episode_id, decision.side, decision.decision, decision.note) == (episode.id, 0, "reject", "rude")
        candidates = {c.key: c for c in load_candidates(reopened)}
        assert candidates[(episode.id, 0)].decision == "reject"
        assert candidates[(episode.id, 1)].decision is None
        assert candidates[(episode.id, 1)].tags == ["runner-tag", "gold", "round-2"]
        turn = reopened.turns(episode.id)[1]
        assert turn.argument == DEFAULT_ACTIONS[1][1]  # the original is kept
        assert turn.edited_argument == "Two hundred and eighty, final offer."
        [edit] = annotations.turn_edits(reopened, episode.id)
        assert (edit.index, edit.original, edit.edited) == (1, DEFAULT_ACTIONS[1][1], turn.edited_argument)
        assert kept([TagIs(tags=["gold"])], reopened) == {(episode.id, 1)}


def test_undoing_an_edit_restores_the_original_and_keeps_history(seeded: Store):
    episode = add_episode(seeded, (4, 4))
    annotations.edit_turn(seeded, episode.id, 0, "Hello there.")
    annotations.revert_turn(seeded, episode.id, 0)
    assert seeded.turns(episode.id)[0].edited_argument is None
    assert [e.edited for e in annotations.turn_edits(seeded, episode.id)] == ["Hello there.", None]
    with pytest.raises(CurationError, match="no edit to undo"):
        annotations.revert_turn(seeded, episode.id, 0)


def test_bad_curation_input_is_refused_clearly(seeded: Store):
    episode = add_episode(seeded, (4, 4))
    running = add_episode(seeded, (4, 4), status=EpisodeStatus.running, minutes=1)
    with pytest.raises(CurationError, match="'none' action"):
        annotations.edit_turn(seeded, episode.id, 3, "words")
    with pytest.raises(CurationError, match="no turn 99"):
        annotations.edit_turn(seeded, episode.id, 99, "words")
    with pytest.raises(CurationError, match="is empty"):
        annotations.edit_turn(seeded, episode.id, 0, "   ")
    with pytest.raises(CurationError, match="running"):
        annotations.set_decision(seeded, running.id, "keep")
    with pytest.raises(CurationError, match="no episode"):
        annotations.set_decision(seeded, "NOPE", "reject")
    with pytest.raises(CurationError, match="side must be 0 or 1"):
        annotations.set_decision(seeded, episode.id, "reject", side=2)
    with pytest.raises(CurationError, match="comma"):
        annotations.add_tags(seeded, episode.id, ["a,b"])
    assert seeded.turns(episode.id)[0].edited_argument is None
    assert annotations.decisions(seeded) == []


# -- counts -------------------------------------------------------------------------------


def test_selection_stats_count_examples_and_tokens_per_side_and_scenario(seeded: Store):
    a = add_episode(seeded, (9, 2), minutes=0)
    b = add_episode(seeded, (3, 8), scenario_id="bike-swap", minutes=1)
    short = [("speak", "Hi."), ("none", ""), ("leave", "")]
    c = add_episode(seeded, (5, 5), scenario_id="bike-swap", actions=short, minutes=2)
    keys = [(a.id, 0), (b.id, 1), (c.id, 0), (c.id, 1)]
    stats = selection.selection_statistics(seeded, keys)
    side0, side1 = examples_per_side()
    assert stats.episodes == 3
    assert stats.total.sides == 4
    assert stats.total.examples == side0 + side1 + 2 + 0
    assert stats.per_side["0"].examples == side0 + 2
    assert stats.per_side["1"].examples == side1
    assert stats.per_scenario["bike-sale"].examples == side0
    assert stats.per_scenario["bike-swap"].examples == side1 + 2
    assert stats.per_scenario["bike-swap"].sides == 3
    turns = seeded.turns(a.id)
    expected_tokens = sum(
        sum(estimate_tokens(m.content) for m in t.prompt) + estimate_tokens(t.action.to_json())
        for t in turns
        if t.agent == 0 and t.action_type != "none"
    )
    assert stats.per_scenario["bike-sale"].tokens == expected_tokens
    assert stats.total.tokens == sum(c.tokens for c in stats.per_scenario.values())
    candidates = {c.key: c for c in load_candidates(seeded)}
    assert candidates[(a.id, 0)].examples == side0


# -- what a curation browser needs --------------------------------------------------------


def test_preview_labels_every_side_and_keeps_a_rejected_match_visible(seeded: Store):
    best = add_episode(seeded, (9, 9), minutes=0)
    second = add_episode(seeded, (8, 2), minutes=1)
    weak = add_episode(seeded, (1, 1), minutes=2)
    annotations.set_decision(seeded, best.id, "reject", side=0)
    annotations.set_decision(seeded, weak.id, "keep", side=1)
    view = selection.preview(load_candidates(seeded), [BestSide()])
    states = {(row.candidate.episode_id, row.candidate.side): (row.state, row.matches) for row in view.rows}
    assert states == {
        (best.id, 0): ("rejected", True),  # best-side would pick it without the rejection
        (best.id, 1): ("selected", True),
        (second.id, 0): ("selected", True),  # the next best, let in by the rejection
        (second.id, 1): ("filtered out", False),
        (weak.id, 0): ("filtered out", False),
        (weak.id, 1): ("kept by hand", True),
    }
    assert set(view.selection.kept) == {(second.id, 0), (best.id, 1), (weak.id, 1)}
    annotations.set_decision(seeded, second.id, "reject", side=1)
    view = selection.preview(load_candidates(seeded), [BestSide()])
    second_1 = next(r for r in view.rows if r.candidate.key == (second.id, 1))
    assert (second_1.state, second_1.matches) == ("rejected", False)  # never the best: stays hidden


def test_episode_candidates_reflect_a_new_decision_and_tags(seeded: Store):
    episode = add_episode(seeded, (6, 3), tags=("runner-tag",))
    annotations.set_decision(seeded, episode.id, "reject")
    annotations.set_decision(seeded, episode.id, "keep", side=1)
    assert annotations.set_tags(seeded, episode.id, ["gold", "short", "gold"]) == ["gold", "short"]
    assert annotations.set_tags(seeded, episode.id, ["short", "new"]) == ["new", "short"]
    fresh = candidates.episode_candidates(seeded, episode.id[:10])
    assert [(c.side, c.decision, c.tags, c.score("goal")) for c in fresh] == [
        (0, "reject", ["runner-tag", "new", "short"], 6.0),
        (1, "keep", ["runner-tag", "new", "short"], 3.0),
    ]
    assert fresh == [c for c in load_candidates(seeded) if c.episode_id == episode.id]
    assert annotations.set_tags(seeded, episode.id, []) == []
    with pytest.raises(CurationError, match="comma"):
        annotations.set_tags(seeded, episode.id, ["x,y"])
    running = add_episode(seeded, (4, 4), status=EpisodeStatus.running, minutes=1)
    with pytest.raises(CurationError, match="running"):
        candidates.episode_candidates(seeded, running.id)


def test_the_selection_counter_matches_a_full_count_and_rereads_only_what_it_must(seeded: Store, monkeypatch):
    a = add_episode(seeded, (9, 2), minutes=0)
    b = add_episode(seeded, (3, 8), scenario_id="bike-swap", minutes=1)
    short = [("speak", "Hi."), ("none", ""), ("leave", "")]
    c = add_episode(seeded, (5, 5), scenario_id="bike-swap", actions=short, minutes=2)
    counter = selection.SelectionCounter(seeded)
    reads: list[str] = []
    real_freeze = frozen.freeze_episode

    def count_and_log(kept, **options):
        reads.clear()
        monkeypatch.setattr(
            selection, "freeze_episode", lambda store, episode_id: reads.append(episode_id) or real_freeze(store, episode_id)
        )
        try:
            return counter.count(kept, **options)
        finally:
            monkeypatch.setattr(selection, "freeze_episode", real_freeze)

    first = [(a.id, 0), (b.id, 1), (c.id, 0)]
    assert count_and_log(first) == selection.selection_statistics(seeded, first)
    assert sorted(reads) == sorted([a.id, b.id, c.id])
    second = [(a.id, 0), (c.id, 0), (c.id, 1)]
    assert count_and_log(second) == selection.selection_statistics(seeded, second)
    assert reads == [c.id]  # only side 1 of c was new

    annotations.edit_turn(seeded, a.id, 0, "A much longer opening line than the one the agent first produced.")
    assert count_and_log(second) == selection.selection_statistics(seeded, second)
    assert reads == [a.id]  # the edit made its count stale
    assert count_and_log(second, cancelled=lambda: True) == selection.selection_statistics(seeded, second)
    annotations.revert_turn(seeded, a.id, 0)
    assert count_and_log(second, cancelled=lambda: True) is None  # it had to read and was told to stop
    assert count_and_log(second) == selection.selection_statistics(seeded, second)
    assert counter.count([]) == selection.selection_statistics(seeded, [])
