"""A runner session: one episode played in a thread of its own, driven from anywhere.

`RunnerSession` owns an `EpisodeRunner`, the thread that plays it and the state around it (who
plays each side, the turn in progress, whether a pause was asked, whether it is closed). The
live episode screen, `sotopia-pi run` and scripts drive one the same way: start, pause (after
the turn or now), step, take over a side, hand it back, swap a side's model or adapter, stop,
close. Nothing here knows about Textual.

Events reach one listener, `SessionEvents` (a `RunnerEvents` with the session's own events), on
the session's threads: a screen turns them into messages, a command prints them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .backends import ChatBackend, ModelSpec, create_backend
from .episode import AgentAction, ChatMessage, Episode, EpisodeStatus, Evaluation, Turn
from .errors import SotopiaError
from .runner import EpisodeRunner, RunnerEvents

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 30.0  # how long `close(wait=True)` waits for a turn being cancelled


class SessionEvents(RunnerEvents):
    """The runner's events plus the session's. All default to nothing; keep them quick."""

    def run_ended(self, episode: Episode, error: BaseException | None) -> None:
        """The playing thread returned (paused, finished, stopped, or failed with `error`)."""

    def sides_changed(self, person_sides: frozenset[int]) -> None:
        """A side was taken over or handed back."""

    def model_changed(self, side: int, spec: ModelSpec) -> None:
        """A side's model or adapter was swapped; it plays with `spec` from its next turn."""

    def swap_failed(self, side: int, error: BaseException) -> None:
        """A swap asked with `swap_adapter_later` failed; the side keeps what it had."""

    def closed(self) -> None:
        """The models and the episode's lease are released; the episode may be opened again."""


@dataclass(frozen=True)
class TurnInProgress:
    index: int
    side: int
    by_human: bool


class _Relay(RunnerEvents):
    """Keeps the session's view of the turn in progress, then passes each event on."""

    def __init__(self, session: RunnerSession) -> None:
        self.session = session

    @property
    def listener(self) -> RunnerEvents:
        return self.session.events

    def turn_started(self, episode_id: str, index: int, agent: int, by_human: bool) -> None:
        self.session.current = TurnInProgress(index, agent, by_human)
        self.listener.turn_started(episode_id, index, agent, by_human)

    def token(self, episode_id: str, index: int, agent: int, argument_so_far: str) -> None:
        self.listener.token(episode_id, index, agent, argument_so_far)

    def turn_committed(self, turn: Turn) -> None:
        self.session.current = None
        self.listener.turn_committed(turn)

    def evaluation(self, evaluation: Evaluation) -> None:
        self.listener.evaluation(evaluation)

    def status_changed(self, episode: Episode) -> None:
        self.listener.status_changed(episode)


class SessionClosed(SotopiaError, RuntimeError):
    """The session was closed; open a new one to play the episode again."""


class RunnerSession:
    def __init__(
        self,
        store,
        episode_id: str,
        *,
        events: RunnerEvents | None = None,
        backends: dict[int, ChatBackend] | None = None,
        backend_factory: Callable[..., ChatBackend] = create_backend,
        holder: str | None = None,
        person_input: Callable[[list[ChatMessage]], AgentAction] | None = None,
    ) -> None:
        """`events` hears everything (a plain RunnerEvents hears the runner's events only);
        `person_input` reads a person's move itself (the command line reads stdin), otherwise
        moves come through `submit`. The other options are EpisodeRunner's."""
        self.events: RunnerEvents = events or SessionEvents()
        self.runner = EpisodeRunner(
            store,
            episode_id,
            events=_Relay(self),
            backends=backends,
            backend_factory=backend_factory,
            holder=holder,
            person_input=person_input,
        )
        self.current: TurnInProgress | None = None
        self.pausing = False  # a pause was asked and the turn in progress is ending
        self.error: BaseException | None = None  # what ended the last run, if it failed
        self._thread: threading.Thread | None = None
        self._playing = threading.Event()
        self._state_lock = threading.Lock()  # start, close and the release that follows
        self._closing = False
        self._released = False
        self._sides_lock = threading.Lock()  # takeovers and hand-backs apply in the order asked

    # -- what it is doing -----------------------------------------------------------------

    @property
    def episode(self) -> Episode:
        return self.runner.episode

    @property
    def turns(self) -> list[Turn]:
        return self.runner.turns

    @property
    def specs(self) -> list[ModelSpec]:
        """The model each side is set to (a person's side taken over keeps its model here)."""
        return list(self.runner.agent_specs)

    @property
    def playing(self) -> bool:
        """Whether the playing thread is at work (a turn, or the judge's terminal score)."""
        return self._playing.is_set()

    @property
    def finished(self) -> bool:
        return self.runner.finished

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def person_sides(self) -> frozenset[int]:
        return frozenset(side for side in (0, 1) if self.runner.is_human(side))

    def model_sides(self) -> list[int]:
        """The sides a model is set to play (possibly on hold while a person plays them)."""
        return [side for side, spec in enumerate(self.runner.agent_specs) if not spec.is_human]

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the playing thread to return; False if it still plays after `timeout`."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.playing

    # -- playing --------------------------------------------------------------------------

    def start(self, step: bool = False) -> bool:
        """Play on in the session's thread (one turn with `step`). False when it already plays
        or the episode is over. Raises SessionClosed after `close`."""
        with self._state_lock:
            if self._closing:
                raise SessionClosed(f"the session of episode {self.episode.id} is closed")
            if self.playing or (self.finished and not self._needs_terminal_score()):
                return False
            self.pausing = False
            self.error = None
            self._playing.set()
            self._thread = threading.Thread(
                target=self._play, args=(step,), name=f"episode-{self.episode.id[:8]}", daemon=True
            )
            self._thread.start()
            return True

    def step(self) -> bool:
        return self.start(step=True)

    def _needs_terminal_score(self) -> bool:
        """A finished episode whose judge never scored it: starting it makes the score."""
        has_judge = bool(self.episode.judge_model)
        return self.episode.status == EpisodeStatus.finished and has_judge and (
            self.runner.store.terminal_evaluation(self.episode.id) is None
        )

    def _play(self, step: bool) -> None:
        error: BaseException | None = None
        try:
            if step:
                self.runner.step()
            else:
                self.runner.run()
        except Exception as failure:
            log.exception("episode %s stopped on an error", self.episode.id)
            error = failure
        finally:
            self.current = None
            self.pausing = False
            self.error = error
            self._playing.clear()
        self._tell("run_ended", self.episode, error)
        if self._closing:
            self._release()

    def pause(self, now: bool = False) -> None:
        """Stop after the turn in progress, or `now`: a generation in progress is cancelled at
        once and that turn is played again on resume. Nothing happens when it is not playing."""
        if self.playing:
            self.pausing = True
            self.runner.pause(now=now)

    def stop(self) -> None:
        """End the episode: the turn in progress is abandoned and the judge scores the rest
        (with no turn played, it stays paused with nothing to score)."""
        self.runner.stop()
        if not self.playing and not self._closing:
            self.start()

    def submit(self, side: int, action: AgentAction) -> None:
        """A person's move for `side` (raises EpisodeError when no person plays it)."""
        self.runner.submit(side, action)

    # -- who plays ------------------------------------------------------------------------

    def take_over(self, side: int) -> None:
        """A person plays `side` from now on. A model generating for it is cancelled at once;
        its partial turn is discarded and the person plays that turn."""
        with self._sides_lock:
            self.runner.take_over(side)
        self._tell("sides_changed", self.person_sides)

    def hand_back(self, side: int) -> None:
        """The model plays `side` again; a pending move of the person's is abandoned. Raises
        EpisodeError for a side whose model is a person."""
        with self._sides_lock:
            self.runner.hand_back(side)
        self._tell("sides_changed", self.person_sides)

    def swap_model(self, side: int, model: ModelSpec | str, backend: ChatBackend | None = None) -> None:
        """Another model (or a person) for `side` from its next turn."""
        self.runner.set_model(side, model, backend)
        self._tell("sides_changed", self.person_sides)
        self._tell("model_changed", side, self.runner.agent_specs[side])

    def swap_adapter(self, side: int, adapter: str | None) -> ModelSpec:
        """Another adapter (a registered name, NAME@vN or a path; None: the base model) for
        `side` from its next turn. Waits for the side's turn in progress; raises BackendError
        (or EpisodeError for a person's side) and then the side keeps what it had."""
        self.runner.set_adapter(side, adapter)
        spec = self.runner.agent_specs[side]
        self._tell("model_changed", side, spec)
        return spec

    def swap_adapter_later(self, side: int, adapter: str | None) -> threading.Thread:
        """`swap_adapter` in a thread of its own; a failure comes as the `swap_failed` event."""

        def swap() -> None:
            try:
                self.swap_adapter(side, adapter)
            except Exception as error:  # noqa: BLE001 - a bad file, a server that refuses it: reported, kept
                self._tell("swap_failed", side, error)

        thread = threading.Thread(target=swap, name=f"swap-adapter-{side + 1}", daemon=True)
        thread.start()
        return thread

    # -- the end --------------------------------------------------------------------------

    def close(self, wait: bool = True) -> None:
        """Release the models and the episode's lease; the episode stays in the store as it
        is. A turn in progress is cancelled (played again on resume). With `wait`, return once
        released; otherwise release in the background (freeing a model waits for any call
        still using it). Calling it again does nothing."""
        with self._state_lock:
            if self._closing:
                return
            self._closing = True
            playing = self.playing
        if playing:
            self.runner.pause(now=True)  # the playing thread releases when it returns
            if wait:
                self.wait(CLOSE_WAIT_S)
            return
        if wait:
            self._release()
        else:
            threading.Thread(target=self._release, name="close-episode", daemon=True).start()

    def abandon(self) -> None:
        """For a process about to exit while a turn cannot be cancelled (a read from stdin, a
        model call that never looks at the cancel): let the episode's lease go now, so another
        runner may take the episode at once. The playing thread ends with the process."""
        with self._state_lock:
            self._closing = True
        self.runner.pause(now=True)
        self.runner.release()

    def _release(self) -> None:
        with self._state_lock:
            if self._released:
                return
            self._released = True
        try:
            self.runner.close()
        finally:
            self._tell("closed")

    def _tell(self, event: str, *args) -> None:
        """Call the listener's method for `event` if it has one (a plain RunnerEvents has none
        of the session's); a failing listener is logged, never allowed to stop the session."""
        method = getattr(self.events, event, None)
        if method is None:
            return
        try:
            method(*args)
        except Exception:
            log.exception("the session listener failed on %s", event)
