"""The episode runner on the deterministic replay backend: rules, storage, control, recovery."""

from __future__ import annotations

import json
import threading

import pytest

from sotopia_pi.backends import BackendError, Completion
from sotopia_pi.backends.replay import ReplayBackend
from sotopia_pi.episode import ActionType, AgentAction, EpisodeStatus
from sotopia_pi.runner import EpisodeRunner, EpisodeSetup, RunnerEvents, new_episode, resume_episode
from sotopia_pi.store import Store

from .factories import GOOD_SCORES, action, judge_answer, seed_store


def setup(**overrides) -> EpisodeSetup:
    values = dict(
        scenario_id="bike-sale",
        agent_ids=("ines", "tomas"),
        agent_models=("replay:a", "replay:b"),
        judge_model="replay:judge",
        live_eval=False,
    )
    values.update(overrides)
    return EpisodeSetup(**values)


def runner_for(store: Store, agent0: list[str], agent1: list[str], judge: list[str] | None = None, **kw):
    seed_store(store)
    episode = new_episode(store, setup(**kw))
    judge_backend = ReplayBackend(judge if judge is not None else [judge_answer(), judge_answer()], "judge")
    return EpisodeRunner(
        store,
        episode.id,
        backends={0: ReplayBackend(agent0, "a"), 1: ReplayBackend(agent1, "b")},
        judge_backend=judge_backend,
    )


def test_round_robin_until_leave_then_terminal_scores(store: Store):
    runner = runner_for(
        store,
        [action("speak", "Two-fifty, firm."), action("leave")],
        [action("speak", "How about 180?"), action("non-verbal communication", "frowns")],
    )
    episode = runner.run()
    turns = store.turns(episode.id)
    assert [(t.index, t.agent, t.action_type) for t in turns] == [
        (0, 0, ActionType.speak),
        (1, 1, ActionType.speak),
        (2, 0, ActionType.leave),
    ]
    assert episode.status == EpisodeStatus.finished
    assert episode.end_reason == "Ines Varga left the conversation"
    evaluation = store.terminal_evaluation(episode.id)
    assert evaluation is not None and evaluation.ok
    assert evaluation.after_turn == 2
    assert evaluation.agents[0].scores["goal"].score == 7
    assert evaluation.agents[0].overall == pytest.approx(sum(GOOD_SCORES.values()) / 7)


def test_each_agent_sees_its_own_goal_and_the_history(store: Store):
    a = ReplayBackend([action("speak", "Hello there"), action("leave")], "a")
    b = ReplayBackend([action("speak", "Hi")], "b")
    seed_store(store)
    episode = new_episode(store, setup(judge_model=""))
    EpisodeRunner(store, episode.id, backends={0: a, 1: b}).run()
    first_prompt = "\n".join(m.content for m in a.calls[0])
    assert "Sell the bike for at least $250" in first_prompt
    assert "You paid $180 for the parts." in first_prompt
    assert "Buy the bike" not in first_prompt
    assert "He already bought a car" not in first_prompt
    assert "She is closing the stall" in first_prompt
    partner_prompt = "\n".join(m.content for m in b.calls[0])
    assert 'Turn #0: Ines Varga said: "Hello there"' in partner_prompt
    assert "Sell the bike" not in partner_prompt
    stored = store.turns(episode.id)
    assert stored[1].prompt == b.calls[0]


def test_turn_limit_and_stale_end(store: Store):
    talk = [action("speak", f"line {i}") for i in range(10)]
    runner = runner_for(store, talk, talk, max_turns=4)
    episode = runner.run()
    assert len(store.turns(episode.id)) == 4
    assert episode.end_reason == "reached the turn limit (4)"

    other = Store(store.path.parent / "other.sqlite3")
    idle = runner_for(other, [action("speak", "hi"), action("none")], [action("none"), action("none")])
    episode = idle.run()
    assert [t.action_type for t in other.turns(episode.id)][-2:] == [ActionType.none, ActionType.none]
    assert "stale" in episode.end_reason


def test_invalid_model_output_is_repaired_not_lost(store: Store):
    runner = runner_for(
        store,
        ["```json\n{\"action_type\": \"speak\", \"argument\": \"Fine, 230.\",}\n```", action("leave")],
        ["I would rather pay less, honestly."],
    )
    episode = runner.run()
    turns = store.turns(episode.id)
    assert turns[0].argument == "Fine, 230."
    assert turns[1].action_type == ActionType.speak
    assert turns[1].argument == "I would rather pay less, honestly."
    assert turns[1].parse_note == "no JSON; taken as speech"
    assert turns[1].raw_output == "I would rather pay less, honestly."


def test_backend_failure_pauses_and_resume_finishes(store: Store):
    runner = runner_for(store, [action("speak", "hello"), action("leave")], [])
    episode = runner.run()
    assert episode.status == EpisodeStatus.paused
    assert "no more canned outputs" in episode.last_error
    assert len(store.turns(episode.id)) == 1

    resumed = resume_episode(
        store,
        episode.id,
        backends={0: ReplayBackend([action("leave")], "a"), 1: ReplayBackend([action("speak", "back")], "b")},
        judge_backend=ReplayBackend([judge_answer(), judge_answer()], "judge"),
    )
    assert resumed.status == EpisodeStatus.finished
    assert [t.argument for t in store.turns(episode.id)] == ["hello", "back", ""]
    assert store.episode(episode.id).last_error == ""


def test_judge_failure_is_stored_as_failure_not_score(store: Store):
    bad_scores = dict(GOOD_SCORES, goal=14)
    runner = runner_for(
        store, [action("leave")], [], judge=[judge_answer(bad_scores), "not json at all"]
    )
    episode = runner.run()
    evaluation = store.terminal_evaluation(episode.id)
    assert evaluation is not None and not evaluation.ok
    assert evaluation.agents[0].failure == "goal: score 14 is outside 0..10"
    assert evaluation.agents[0].scores == {} and evaluation.agents[0].overall is None
    assert "not JSON" in evaluation.agents[1].failure


def test_judge_backend_error_is_a_failure(store: Store):
    class Down:
        name = "down"

        def complete(self, messages, **kw):
            raise BackendError("connection refused at http://127.0.0.1:9/v1")

        def close(self):
            pass

    seed_store(store)
    episode = new_episode(store, setup())
    runner = EpisodeRunner(
        store, episode.id, backends={0: ReplayBackend([action("leave")])}, judge_backend=Down()
    )
    runner.run()
    evaluation = store.terminal_evaluation(episode.id)
    assert evaluation.agents[1].failure == "judge model failed: connection refused at http://127.0.0.1:9/v1"


def test_take_over_mid_episode_and_hand_back(store: Store):
    seed_store(store)
    episode = new_episode(store, setup(judge_model=""))
    started, human_turn_done = threading.Event(), threading.Event()

    class Events(RunnerEvents):
        def turn_started(self, episode_id, index, agent, by_human):
            if by_human:
                started.set()

        def turn_committed(self, turn):
            if turn.by_human:
                runner.hand_back(1)
                human_turn_done.set()

    model_b = ReplayBackend([action("speak", "model again"), action("speak", "x")], "b")
    runner = EpisodeRunner(
        store,
        episode.id,
        events=Events(),
        backends={0: ReplayBackend([action("speak", "one"), action("speak", "two"), action("leave")]), 1: model_b},
    )
    runner.take_over(1)
    thread = threading.Thread(target=runner.run)
    thread.start()
    assert started.wait(5)
    runner.submit(1, AgentAction(action_type=ActionType.speak, argument="typed by a person"))
    assert human_turn_done.wait(5)
    thread.join(10)
    turns = store.turns(episode.id)
    assert [(t.argument, t.by_human) for t in turns] == [
        ("one", False),
        ("typed by a person", True),
        ("two", False),
        ("model again", False),
        ("", False),
    ]
    assert turns[1].model == "human"


def test_pause_waits_for_turn_then_resume_continues(store: Store):
    seed_store(store)
    episode = new_episode(store, setup(judge_model=""))

    class PauseAfterFirst(RunnerEvents):
        def turn_committed(self, turn):
            if turn.index == 0:
                runner.pause()

    runner = EpisodeRunner(
        store,
        episode.id,
        events=PauseAfterFirst(),
        backends={0: ReplayBackend([action("speak", "a"), action("leave")]), 1: ReplayBackend([action("speak", "b")])},
    )
    assert runner.run().status == EpisodeStatus.paused
    assert len(store.turns(episode.id)) == 1
    runner.events = RunnerEvents()
    assert runner.run().status == EpisodeStatus.finished
    assert len(store.turns(episode.id)) == 3


def test_live_evaluation_is_stored_as_provisional(store: Store):
    seed_store(store)
    episode = new_episode(store, setup(live_eval=True))

    class SlowJudge(ReplayBackend):
        def complete(self, messages, schema=None, **kw):
            live = "scores" in schema["properties"]  # a live call: both sides' integers only
            text = json.dumps({"scores": [GOOD_SCORES, GOOD_SCORES]}) if live else judge_answer()
            return Completion(text=text, finish_reason="stop")

    runner = EpisodeRunner(
        store,
        episode.id,
        backends={0: ReplayBackend([action("speak", "a"), action("leave")]), 1: ReplayBackend([action("speak", "b")])},
        judge_backend=SlowJudge([], "judge"),
    )
    runner.run()
    kinds = [e.kind for e in store.evaluations(episode.id)]
    assert kinds.count("terminal") == 1
    assert all(e.ok for e in store.evaluations(episode.id))
    provisional = store.evaluations(episode.id, kind="provisional")
    assert all(0 <= e.after_turn <= 2 for e in provisional)


def test_judge_that_cannot_load_is_a_stored_failure_and_play_goes_on(store: Store):
    seed_store(store)
    episode = new_episode(store, setup(judge_model="gguf:/nowhere/judge.gguf", live_eval=True))

    def factory(name, **options):
        if name.startswith("gguf:"):
            raise FileNotFoundError(name)
        raise AssertionError(name)

    runner = EpisodeRunner(
        store,
        episode.id,
        backends={0: ReplayBackend([action("speak", "hi"), action("leave")]), 1: ReplayBackend([action("speak", "yo")])},
        backend_factory=factory,
    )
    finished = runner.run()
    assert finished.status == EpisodeStatus.finished
    evaluation = store.terminal_evaluation(episode.id)
    assert not evaluation.ok
    assert evaluation.agents[0].failure.startswith("judge model failed: cannot load gguf:/nowhere/judge.gguf")


def test_unexpected_error_pauses_instead_of_leaving_it_running(store: Store):
    class Broken(ReplayBackend):
        def complete(self, messages, **kw):
            raise ZeroDivisionError("oops")

    seed_store(store)
    episode = new_episode(store, setup(judge_model=""))
    runner = EpisodeRunner(store, episode.id, backends={0: Broken([])})
    paused = runner.run()
    assert paused.status == EpisodeStatus.paused
    assert store.episode(episode.id).last_error == "unexpected error: ZeroDivisionError: oops"


def test_set_model_to_human_and_back(store: Store):
    seed_store(store)
    episode = new_episode(store, setup(judge_model=""))
    runner = EpisodeRunner(store, episode.id, backends={0: ReplayBackend([]), 1: ReplayBackend([])})
    runner.set_model(1, "human")
    assert runner.is_human(1) and store.episode(episode.id).agent_models[1] == "human"
    runner.set_model(1, "replay:x", ReplayBackend([action("leave")]))
    assert not runner.is_human(1)
