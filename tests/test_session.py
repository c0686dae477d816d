"""RunnerSession, headless: pausing now, taking over and handing back, swapping adapters, closing,
and a killed session's turns. Replay models make every run the same; the listener holds a
generation midway (it blocks the token callback) so no check depends on a race."""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

import pytest

from sotopia_pi.backends import ModelSpec
from sotopia_pi.backends.replay import ReplayBackend
from sotopia_pi.episode import ActionType, AgentAction, EpisodeStatus
from sotopia_pi.runner import EpisodeSetup, new_episode
from sotopia_pi.session import RunnerSession, SessionClosed, SessionEvents
from sotopia_pi.store import Store

from .factories import action, seed_store
from .helpers import wait_for

LONG = "I can go to two hundred and twenty if you throw in the lights and the lock. " * 3


class Listener(SessionEvents):
    """Records the session's events. With `hold` (turn index, token count) it blocks the
    runner's thread in that turn's token callback until `go` is set: a model caught midway."""

    def __init__(self, hold: tuple[int, int] | None = None) -> None:
        self.hold = hold
        self.mid = threading.Event()
        self.go = threading.Event()
        self.tokens: dict[int, int] = defaultdict(int)
        self.committed: list = []
        self.models: list[tuple[int, ModelSpec]] = []
        self.ends: list = []
        self.closings = 0

    def token(self, episode_id, index, agent, argument_so_far) -> None:
        self.tokens[index] += 1
        if self.hold == (index, self.tokens[index]):
            self.mid.set()
            assert self.go.wait(30), "the test never let the generation go on"

    def turn_committed(self, turn) -> None:
        self.committed.append(turn)

    def model_changed(self, side, spec) -> None:
        self.models.append((side, spec))

    def run_ended(self, episode, error) -> None:
        self.ends.append((episode.status, error))

    def closed(self) -> None:
        self.closings += 1


class SwappingReplay(ReplayBackend):
    """A replay model that swaps adapters in place, as llama.cpp does."""

    def __init__(self, outputs, name: str) -> None:
        super().__init__(outputs, name)
        self._adapter: str | None = None

    @property
    def adapter(self) -> str | None:
        return self._adapter

    def set_adapter(self, adapter) -> None:
        self._adapter = None if adapter is None else str(adapter)


def new_session(store: Store, backends: dict, listener: Listener, **setup) -> RunnerSession:
    seed_store(store)
    values = {"agent_models": ("replay:a", "replay:b"), "judge_model": "", "live_eval": False, "max_turns": 4}
    values.update(setup)
    episode = new_episode(store, EpisodeSetup("bike-sale", ("ines", "tomas"), **values))
    return RunnerSession(store, episode.id, events=listener, backends=backends, **_factory(backends))


def _factory(backends: dict) -> dict:
    """Reloads (a swap on a model that cannot swap) give a fresh replay of the same answers."""
    answers = {side: list(backend._outputs) for side, backend in backends.items()}
    by_name = {"replay:a": answers.get(0, []), "replay:b": answers.get(1, [])}

    def factory(name: str, **options):
        return ReplayBackend(by_name[name.split("+")[0]], name)

    return {"backend_factory": factory}


def test_pause_now_cancels_the_generation_within_a_token_and_saves_no_partial_turn(store: Store):
    listener = Listener(hold=(1, 3))
    side2 = ReplayBackend([action("speak", LONG), action("speak", "Deal.")], "replay:b")
    session = new_session(store, {0: ReplayBackend([action("speak", "Two-fifty.")] * 2, "replay:a"), 1: side2}, listener)
    assert session.start()
    assert listener.mid.wait(10)
    streamed = listener.tokens[1]
    session.pause(now=True)
    listener.go.set()
    assert session.wait(10)
    assert listener.tokens[1] - streamed <= 1  # stopped within one token of the pause
    assert listener.tokens[1] < len(action("speak", LONG)) // 8  # far from the answer's end
    episode = store.episode(session.episode.id)
    assert episode.status == EpisodeStatus.paused and episode.last_error == ""
    assert [t.index for t in store.turns(episode.id)] == [0]  # the partial turn was not saved

    assert session.start()  # the cancelled turn is played again, whole
    assert session.wait(10)
    turns = store.turns(episode.id)
    assert [t.index for t in turns] == [0, 1, 2, 3]
    assert turns[1].argument.strip() == LONG.strip()
    session.close()


def test_take_over_mid_generation_cancels_it_and_hand_back_gives_the_side_its_model(store: Store):
    listener = Listener(hold=(1, 2))
    side1 = ReplayBackend([action("speak", "Two-fifty."), action("speak", "Two-forty.")], "replay:a")
    side2 = ReplayBackend([action("speak", LONG), action("leave")], "replay:b")
    session = new_session(store, {0: side1, 1: side2}, listener)
    session.start()
    assert listener.mid.wait(10)
    streamed = listener.tokens[1]
    session.take_over(1)
    assert session.person_sides == {1}
    listener.go.set()
    person = session.runner.human(1)
    assert person is not None
    wait_for(person.waiting.is_set, "the person's move to be asked for")
    assert listener.tokens[1] - streamed <= 1
    assert [t.index for t in store.turns(session.episode.id)] == [0]

    session.submit(1, AgentAction(action_type=ActionType.speak, argument="How about 180?"))
    wait_for(lambda: len(store.turns(session.episode.id)) >= 2, "the person's turn to be saved")
    session.hand_back(1)
    assert session.person_sides == frozenset()
    assert session.wait(10)
    turns = store.turns(session.episode.id)
    assert [(t.index, t.by_human, t.model) for t in turns] == [
        (0, False, "replay:a"), (1, True, "human"), (2, False, "replay:a"), (3, False, "replay:b"),
    ]
    assert turns[1].argument == "How about 180?" and turns[3].argument.strip() == LONG.strip()
    session.close()


def test_after_a_swap_the_turns_carry_the_adapter_that_played_them(store: Store, isolated_home: Path):
    listener = Listener()
    swapping = SwappingReplay([action("speak", f"Ines {n}") for n in range(4)], "replay:a")
    plain = ReplayBackend([action("speak", f"Tomas {n}") for n in range(4)], "replay:b")
    session = new_session(store, {0: swapping, 1: plain}, listener, max_turns=6)
    for _ in range(2):
        session.step()
        session.wait(10)
    registered = isolated_home / "adapters" / "bc-1" / "v3" / "adapter.gguf"
    spec = session.swap_adapter(0, str(registered))  # in place: the backend swaps
    session.swap_adapter(1, "/elsewhere/lora.gguf")  # reloaded: this model cannot swap
    assert spec.adapter == str(registered) and listener.models[0] == (0, spec)
    for _ in range(2):
        session.step()
        session.wait(10)
    session.swap_adapter(0, None)
    session.step()
    session.wait(10)
    turns = store.turns(session.episode.id)
    assert [(t.index, t.adapter) for t in turns] == [
        (0, ""), (1, ""), (2, "bc-1@v3"), (3, "/elsewhere/lora.gguf"), (4, ""),
    ]
    assert turns[2].model == f"replay:a+adapter={registered}" and turns[4].model == "replay:a"
    assert store.episode(session.episode.id).agent_models[1] == "replay:b+adapter=/elsewhere/lora.gguf"
    session.close()


def test_close_is_idempotent_cancels_a_turn_in_progress_and_frees_the_episode(store: Store):
    listener = Listener(hold=(0, 2))
    session = new_session(store, {0: ReplayBackend([action("speak", LONG)], "replay:a"), 1: ReplayBackend([], "replay:b")}, listener)
    session.start()
    assert listener.mid.wait(10)
    closing = threading.Thread(target=session.close)
    closing.start()
    wait_for(lambda: session.closed, "the close to begin")
    listener.go.set()
    closing.join(30)
    assert not closing.is_alive() and not session.playing
    session.close()
    session.close(wait=False)
    assert listener.closings == 1
    assert store.turns(session.episode.id) == []
    assert store.episode(session.episode.id).status == EpisodeStatus.paused
    with pytest.raises(SessionClosed):
        session.start()
    again = RunnerSession(store, session.episode.id, backends={0: ReplayBackend([action("leave")], "replay:a")})
    again.runner.claim()  # the lease was let go
    again.close()


def test_a_killed_sessions_turns_survive_and_a_new_session_plays_on(store: Store, tmp_path: Path):
    from .test_crash_resume import (
        killed_mid_episode,  # `run` drives a RunnerSession; SIGKILLed
    )

    episode_id, committed = killed_mid_episode(store, tmp_path)
    assert [t.index for t in committed] == [0, 1, 2]
    listener = Listener()
    session = RunnerSession(
        store, episode_id, events=listener,
        backends={0: ReplayBackend([action("speak", "Still here.")] * 3, "a")},
    )  # fmt: skip
    assert session.person_sides == {1}
    session.start()
    person = session.runner.human(1)
    wait_for(person.waiting.is_set, "the person's move after the resume")
    session.submit(1, AgentAction(action_type=ActionType.leave))
    assert session.wait(10)
    turns = store.turns(episode_id)
    assert [(t.index, t.argument) for t in turns[:3]] == [(t.index, t.argument) for t in committed]
    assert [t.index for t in turns] == [0, 1, 2, 3]
    assert store.episode(episode_id).status == EpisodeStatus.finished
    session.close()


@pytest.mark.slow
def test_pause_now_stops_the_embedded_model_within_a_token(store: Store):
    listener = Listener(hold=(0, 2))
    seed_store(store)
    setup = EpisodeSetup("bike-sale", ("ines", "tomas"), ("embedded-base", "embedded-base"), judge_model="", live_eval=False, max_turns=2)
    session = RunnerSession(store, new_episode(store, setup).id, events=listener)
    session.start()
    assert listener.mid.wait(120), "the embedded model streamed no tokens"
    session.pause(now=True)
    listener.go.set()
    assert session.wait(60)
    assert listener.tokens[0] <= 3
    assert store.turns(session.episode.id) == []
    assert store.episode(session.episode.id).status == EpisodeStatus.paused
    session.close()
