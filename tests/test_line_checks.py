"""Repeated lines and role slips: how they are told apart from good lines, and how the runner
asks the model again for them."""

from __future__ import annotations

import pytest

from sotopia_pi.backends.replay import ReplayBackend
from sotopia_pi.episode import ActionType, Turn
from sotopia_pi.library import load_library
from sotopia_pi.library.expert_corpus import load_corpus
from sotopia_pi.line_checks import ECHO_THRESHOLD, echo_of, echo_share, line_similarity, role_slip
from sotopia_pi.runner import ASK_AGAIN_HEAT, EpisodeRunner, new_episode
from sotopia_pi.store import Store

from .factories import action, judge_answer, seed_store
from .test_runner import setup


def turns_of(*lines: tuple[str, str]) -> list[Turn]:
    return [
        Turn(episode_id="e", index=i, agent=i % 2, action_type=ActionType(kind), argument=text)
        for i, (kind, text) in enumerate(lines)
    ]


@pytest.mark.parametrize(
    "new, earlier",
    [
        (
            "Twenty minutes, and I'll be back. I won't hurt you.",
            "Twenty minutes, and I'll be back. I won't, I promise.",
        ),
        ("I'll hold it for you, then.", "i'll hold it for you, then!"),
        ("That's the one I'm telling you about.", "No. That's the one I'm telling you about, and the price stands."),
    ],
)
def test_a_near_copy_or_a_fragment_of_an_earlier_line_is_an_echo(new, earlier):
    assert line_similarity(new, earlier) >= ECHO_THRESHOLD


@pytest.mark.parametrize(
    "new, earlier",
    [
        ("Forty-five, and I'll throw in the lock.", "The tyres are new; I fitted them in May."),
        ("Then I will put in 100. Nine o'clock, at the gate.", "Good. Then I will put in 100."),
        ("Yes, fine.", "Yes, fine."),  # too short to count: people say that twice
    ],
)
def test_fresh_lines_and_short_replies_are_not_echoes(new, earlier):
    assert line_similarity(new, earlier) < ECHO_THRESHOLD


def test_echo_of_names_the_closest_earlier_turn_of_either_side():
    turns = turns_of(
        ("speak", "I can do forty for the bike if you throw in the lights."),
        ("speak", "Forty is low when the tyres are new and the gears were serviced."),
        ("leave", ""),
    )
    echo = echo_of("Forty is low when the tyres are new and the gears are fine.", turns)
    assert echo is not None and echo.turn_index == 1 and echo.similarity >= ECHO_THRESHOLD
    assert echo_of("Fine, forty-two and we shake on it right now.", turns) is None
    assert echo_share(turns) == (0, 2)


def test_no_line_of_the_expert_corpus_counts_as_an_echo():
    """The guard must leave good writing alone: asking again costs a turn's time."""
    echoes = checked = 0
    for entry in load_corpus():
        if entry.episode.quality != "expert":
            continue
        found, lines = echo_share(turns_of(*[(t.action_type.value, t.argument) for t in entry.episode.turns]))
        echoes, checked = echoes + found, checked + lines
    assert checked > 1500 and echoes == 0


@pytest.mark.parametrize(
    "line, slip",
    [
        ("Cheers, Lucia. I'll ring the removal firm today.", "speaks to itself by name (Lucia)"),
        ("Lucia, I can't believe you're here.", "speaks to itself by name (Lucia)"),
        ("I'll be ready for you, Lucia.", "speaks to itself by name (Lucia)"),
        ("I'm Gwen, and I'll pay you today.", "calls itself Gwen"),
        ("My name is Gwen, too.", "calls itself Gwen"),
    ],
)
def test_speaking_to_oneself_by_name_or_taking_the_others_name_is_a_slip(line, slip):
    assert role_slip(line, "Lucia Vidal", "Gwen Pierce") == slip


@pytest.mark.parametrize(
    "line",
    [
        "Hi, Lucia Vidal from the ninth floor. Sorry to catch you on the doorstep.",
        "Lucia, please. Nobody calls me Mrs Vidal.",
        "Lucia Vidal, from the residents' committee.",
        "I'm Lucia. Thanks for coming, Gwen.",
        "Lucia. It's the urn, the forms are over there.",
        "Open up, it's me, Lucia!",
    ],
)
def test_introductions_and_speaking_to_the_other_are_not_slips(line):
    assert role_slip(line, "Lucia Vidal", "Gwen Pierce") is None


def test_two_sides_with_one_first_name_never_slip():
    assert role_slip("Thanks, Sam.", "Sam Rivera", "Sam Okoro") is None


def test_no_line_of_the_expert_corpus_slips_out_of_role():
    names = {character.id: character.name for character in load_library().characters}
    slips = [
        (entry.episode.id, index)
        for entry in load_corpus()
        for index, turn in enumerate(entry.episode.turns)
        if turn.action_type == ActionType.speak
        and role_slip(turn.argument, names[entry.episode.agents[index % 2]], names[entry.episode.agents[1 - index % 2]])
    ]
    assert slips == []


class RecordingReplay(ReplayBackend):
    def __init__(self, outputs, name):
        super().__init__(outputs, name)
        self.temperatures: list[float] = []

    def complete(self, messages, *, temperature=0.7, **options):
        self.temperatures.append(temperature)
        return super().complete(messages, temperature=temperature, **options)


OPENING = "I can do forty for the bike if you throw in the lights."
ECHO = "I can do forty for the bike if you throw in the lock."


def play_two_turns(store: Store, second: list[str], **overrides) -> tuple[list[Turn], RecordingReplay]:
    seed_store(store)
    episode = new_episode(store, setup(max_turns=2, **overrides))
    side_b = RecordingReplay(second, "b")
    runner = EpisodeRunner(
        store,
        episode.id,
        backends={0: ReplayBackend([action("speak", OPENING)], "a"), 1: side_b},
        judge_backend=ReplayBackend([judge_answer()], "judge"),
    )
    runner.run()
    runner.close()
    return store.turns(episode.id), side_b


def test_a_repeated_line_is_asked_for_again_hotter_and_the_fresh_answer_kept(store: Store):
    fresh = "Forty is low when the tyres are new and the gears were serviced."
    turns, side_b = play_two_turns(store, [action("speak", ECHO), action("speak", OPENING), action("speak", fresh)])
    assert turns[1].argument == fresh
    assert (turns[1].resamples, turns[1].echoes) == (2, None)
    assert side_b.temperatures == pytest.approx([0.7, 0.7 + ASK_AGAIN_HEAT, 0.7 + 2 * ASK_AGAIN_HEAT])
    assert fresh in turns[1].raw_output


def test_when_every_answer_repeats_the_least_repetitive_is_kept_and_marked(store: Store):
    closer = "I can do forty for the bike if you throw in the lights, then."
    farther = "I can do forty for the bike if you throw in a bell and a basket."
    turns, side_b = play_two_turns(store, [action("speak", closer), action("speak", farther), action("speak", OPENING)])
    assert turns[1].argument == farther
    assert turns[1].resamples == 2 and turns[1].echoes == 0


def test_a_failure_while_asking_again_keeps_the_answer_already_given(store: Store):
    turns, _ = play_two_turns(store, [action("speak", ECHO)])  # the replay runs out on the retry
    assert turns[1].argument == ECHO and turns[1].echoes == 0 and turns[1].resamples == 0


def test_ask_again_zero_turns_the_guard_off(store: Store):
    turns, side_b = play_two_turns(store, [action("speak", ECHO)], ask_again=0)
    assert turns[1].argument == ECHO and len(side_b.temperatures) == 1


def test_a_line_out_of_role_is_asked_for_again_and_a_slip_is_worse_than_an_echo(store: Store):
    to_herself = "Thanks, Tomas. Forty is low for tyres this new."
    echo = "I can do forty for the bike if you throw in the lock."
    turns, _ = play_two_turns(store, [action("speak", to_herself), action("speak", echo), action("speak", to_herself)])
    assert turns[1].argument == echo  # every answer was faulty: the echo beats the slips
    assert turns[1].refused == ["speaks to itself by name (Tomas)", "speaks to itself by name (Tomas)"]
    assert (turns[1].echoes, turns[1].role_slip) == (0, "")
    fresh = "Forty is low when the tyres are new."
    turns, _ = play_two_turns(store, [action("speak", "I'm Ines, and forty is low."), action("speak", fresh)])
    assert turns[1].argument == fresh and turns[1].refused == ["calls itself Ines"]


def test_the_inspector_says_why_a_turn_was_asked_for_again():
    from tui.screens.inspector import turn_details

    turn = Turn(
        episode_id="e",
        index=3,
        agent=1,
        action_type=ActionType.speak,
        argument="Forty, then.",
        refused=["repeats turn #1", "speaks to itself by name (Tomas)"],
        echoes=1,
    )
    text = turn_details(turn).plain
    assert "asked again 2x; answers not kept: repeats turn #1; speaks to itself by name (Tomas)" in text
    assert "kept as the least faulty answer: repeats turn #1" in text
    assert "asked again" not in turn_details(turn.model_copy(update={"refused": [], "echoes": None})).plain
