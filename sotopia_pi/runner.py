"""The episode runner: two agents take turns, each turn is committed before the next begins.

Round-robin: agent 0 acts on even turns, agent 1 on odd turns. An episode ends when an agent
leaves, when it reaches its turn limit, or when it goes stale (`stale_limit` idle turns in a
row). Then the judge gives the terminal, official score.

A runner is driven from one thread (`run` or `step`); other threads may call `pause` (after the
turn, or `now`), `stop`, `take_over`, `hand_back`, `set_model` and `set_adapter` at any moment.
`RunnerSession` (sotopia_pi/session.py) owns that thread for screens and commands.

Each side's model is carried as a ModelSpec (`agent_specs`), parsed once from the names the
episode stores; every turn records the model name and the adapter that played it. A backend failure pauses the episode
with the error recorded; nothing already played is lost, and `resume_episode` (or
`sotopia-pi resume`) continues it later, in this process or another.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .backends import (
    AdapterSwapping,
    BackendError,
    Cancelled,
    ChatBackend,
    Completion,
    ModelSpec,
    adapter_identity,
    as_spec,
    create_backend,
    preset_spec,
    resolve_adapter,
)
from .backends.human import HumanBackend
from .episode import (
    ActionType,
    AgentAction,
    AgentEvaluation,
    ChatMessage,
    Episode,
    EpisodeStatus,
    Evaluation,
    Turn,
    action_json_schema,
)
from .errors import SotopiaError
from .judge import JUDGE_SAMPLING, Judge, LiveEvaluator, load_dimension_set
from .line_checks import Echo, echo_of, role_slip
from .model_text import clean_text
from .profiles import Character, Scenario
from .prompts import messages_for_turn, parse_action, partial_argument
from .score_head import shipped_score_head
from .store import Store, leases
from .visibility import HINT_TAGS, agent_view

DEFAULT_MAX_TURNS = 20
DEFAULT_STALE_LIMIT = 2
# A model's line that repeats one already said, or slips out of role, is asked for again, this many
# times at most, each a little hotter; the least faulty answer is kept (bench/echo_guard.py).
DEFAULT_ASK_AGAIN = 2
ASK_AGAIN_HEAT = 0.3
LLAMA_KINDS = {"embedded", "embedded-base", "gguf", "catalog"}
LIVE_CLOSE_TIMEOUT_S = 20  # how long the end of an episode waits for the last live score

log = logging.getLogger(__name__)


class RunnerEvents:
    """Callbacks from the runner's thread. Override what you need; all default to nothing.
    They run on the runner's (or the live judge's) thread: keep them quick and thread-safe."""

    def turn_started(self, episode_id: str, index: int, agent: int, by_human: bool) -> None: ...

    def token(self, episode_id: str, index: int, agent: int, argument_so_far: str) -> None: ...

    def turn_committed(self, turn: Turn) -> None: ...

    def evaluation(self, evaluation: Evaluation) -> None:
        """A stored evaluation. Live ones (kind "provisional", from the live judge's thread) come
        in turn order, one per scored turn: `after_turn` is the turn scored, `skipped_turns` the
        turns since the previous live score that got none (the judge fell behind and scored the
        newest), `latency_ms` the judge's time, `prompt_tokens - cached_tokens` what it read
        afresh. The last turn's live score comes before the status turns to finished, and the
        terminal evaluation (kind "terminal", with reasons) after it."""

    def status_changed(self, episode: Episode) -> None: ...


LIVE_WARM_UP_WAIT_S = 15.0  # a judge slower than this at reading the scene is not waited for


class EpisodeError(SotopiaError, RuntimeError):
    pass


@dataclass
class EpisodeSetup:
    """Everything needed to start an episode; `new_episode` checks it and stores the record."""

    scenario_id: str
    agent_ids: tuple[str, str]
    agent_models: tuple[str | ModelSpec, str | ModelSpec] = ("embedded", "embedded")
    judge_model: str | ModelSpec = "embedded"  # "" for no judge
    max_turns: int = DEFAULT_MAX_TURNS
    live_eval: bool = True
    stale_limit: int = DEFAULT_STALE_LIMIT
    temperature: float = 0.7
    max_tokens: int = 200
    ask_again: int = DEFAULT_ASK_AGAIN
    dimension_set: str = "sotopia"
    tags: tuple[str, ...] = ()


def new_episode(store: Store, setup: EpisodeSetup) -> Episode:
    scenario = store.scenario(setup.scenario_id)
    for character_id in setup.agent_ids:
        store.character(character_id)
    if setup.agent_ids[0] == setup.agent_ids[1]:
        raise EpisodeError("the two agents must play two different characters")
    if setup.max_turns < 1:
        raise EpisodeError("max turns must be at least 1")
    agents = [preset_spec(as_spec(model)) for model in setup.agent_models]
    judge = preset_spec(as_spec(setup.judge_model), "judge") if setup.judge_model else None
    load_dimension_set(setup.dimension_set)
    episode = Episode(
        scenario_id=scenario.id,
        agent_ids=list(setup.agent_ids),
        agent_models=[spec.name for spec in agents],
        judge_model=judge.name if judge is not None else "",
        max_turns=setup.max_turns,
        live_eval=setup.live_eval and bool(setup.judge_model),
        status=EpisodeStatus.paused,
        tags=list(setup.tags),
        settings={
            "stale_limit": setup.stale_limit,
            "temperature": setup.temperature,
            "max_tokens": setup.max_tokens,
            "ask_again": setup.ask_again,
            "dimension_set": setup.dimension_set,
        },
    )
    store.save_episode(episode)
    return episode


def end_reason(turns: Sequence[Turn], names: Sequence[str], max_turns: int, stale_limit: int) -> str:
    """Why the episode is over after these turns, or "" if it goes on."""
    if turns and turns[-1].action_type == ActionType.leave:
        return f"{names[turns[-1].agent]} left the conversation"
    if len(turns) >= max_turns:
        return f"reached the turn limit ({max_turns})"
    recent = turns[-stale_limit:]
    if stale_limit > 0 and len(recent) == stale_limit and all(
        t.action_type == ActionType.none for t in recent
    ):
        return f"the conversation went stale ({stale_limit} idle turns in a row)"
    return ""


def _holding_lease(method):
    """Run `method` holding the episode's lease; let it go after if it was taken for this call."""

    @functools.wraps(method)
    def holding(self: EpisodeRunner, *args, **kwargs):
        taken_here = self._lease is None
        self.claim()
        try:
            return method(self, *args, **kwargs)
        finally:
            if taken_here:
                self.release()

    return holding


class EpisodeRunner:
    def __init__(
        self,
        store: Store,
        episode_id: str,
        *,
        events: RunnerEvents | None = None,
        backends: dict[int, ChatBackend] | None = None,
        judge_backend: ChatBackend | None = None,
        backend_factory: Callable[..., ChatBackend] = create_backend,
        holder: str | None = None,
        person_input: Callable[[list[ChatMessage]], AgentAction] | None = None,
    ):
        """`person_input`, when given, reads a person's move itself (the command line reads
        stdin); otherwise a person's moves come through `submit`."""
        self.store = store
        self._person_input = person_input
        self._holder = holder  # who the episode's lease names (default: the command line)
        self._lease: leases.Lease | None = None
        self._heartbeat: leases.Heartbeat | None = None
        self._lease_lost = threading.Event()
        self.episode = store.episode(episode_id)
        self.scenario: Scenario = store.scenario(self.episode.scenario_id)
        self.characters: tuple[Character, Character] = (
            store.character(self.episode.agent_ids[0]),
            store.character(self.episode.agent_ids[1]),
        )
        self.names = (self.characters[0].name, self.characters[1].name)
        self.views = tuple(agent_view(self.scenario, self.characters, side, HINT_TAGS) for side in (0, 1))
        self.agent_specs: list[ModelSpec] = _specs_of(self.episode)
        self.turns: list[Turn] = store.turns(episode_id)
        self.events = events or RunnerEvents()
        self._factory = backend_factory
        self._lock = threading.RLock()
        self._models: dict[int, ChatBackend] = dict(backends or {})
        self._humans: dict[int, HumanBackend] = {}
        self._judge_backend = judge_backend
        self._judge: Judge | None = None
        self._live: LiveEvaluator | None = None
        self._pause = threading.Event()
        self._pause_now = threading.Event()  # abandon the turn in progress (and the next one)
        self._stop = threading.Event()
        self._turn_cancel = threading.Event()
        self._current_side: int | None = None
        # Held while a side's model generates and its turn is committed: an adapter swap for
        # that side waits for it, so it takes effect from the side's next turn, never mid-turn.
        self._generating = (threading.Lock(), threading.Lock())
        for side, spec in enumerate(self.agent_specs):
            if spec.is_human and side not in self._models:
                self._humans[side] = self._person()

    # -- settings -------------------------------------------------------------------------

    @property
    def settings(self) -> dict:
        return self.episode.settings

    @property
    def finished(self) -> bool:
        return self.episode.status in (EpisodeStatus.finished, EpisodeStatus.failed)

    @property
    def current_side(self) -> int | None:
        """The side whose turn is being played now, or None between turns."""
        return self._current_side

    def _load_options(self, spec: ModelSpec, role: str) -> dict:
        """llama.cpp options: the cores shared between agents and a live judge instead of
        oversubscribing them (decode collapses when both use every core), and the judge's
        sampling (JUDGE_SAMPLING)."""
        if spec.kind not in LLAMA_KINDS:
            return {}
        options: dict = dict(JUDGE_SAMPLING) if role == "judge" else {}
        cores = os.cpu_count() or 2
        if self.episode.live_eval and cores <= 4:
            options["n_threads"] = max(1, cores // 2)
        return options

    def _load(self, spec: ModelSpec, role: str) -> ChatBackend:
        """Build a backend; whatever goes wrong while loading becomes a BackendError. The
        factory is given the model's name (a factory written for tests picks by name)."""
        try:
            return self._factory(spec.name, **self._load_options(spec, role))
        except BackendError:
            raise
        except Exception as error:  # a missing file, a bad option, a broken install
            raise BackendError(f"cannot load {spec.name}: {error}") from error

    def _agent_backend(self, side: int) -> ChatBackend:
        if side in self._humans:
            return self._humans[side]
        with self._lock:
            if side in self._models:
                return self._models[side]
            spec = self.agent_specs[side]
        # Loaded outside the lock: take_over/hand_back must not wait for a model to load.
        backend = self._load(spec, "agent")
        with self._lock:
            if side in self._models or self.agent_specs[side] != spec:
                backend.close()  # swapped meanwhile (set_model); keep what is there now
                return self._models.get(side) or self._agent_backend(side)
            self._models[side] = backend
            return backend

    def judge(self) -> Judge | None:
        """The judge, loaded on first use; None when the episode has no judge.
        Raises BackendError when the judge model cannot be loaded."""
        if not self.episode.judge_model and self._judge_backend is None:
            return None
        if self._judge is None:
            backend = self._judge_backend or self._load(as_spec(self.episode.judge_model), "judge")
            self._judge_backend = backend
            self._judge = Judge(
                backend,
                load_dimension_set(self.settings.get("dimension_set", "sotopia")),
                model_name=self.episode.judge_model or None,
                score_head=shipped_score_head(self.episode.judge_model) if self.episode.judge_model else None,
            )
        return self._judge

    def load_models(self) -> None:
        """Load both agents and the judge now, so that a model that cannot load fails before a
        turn is played rather than halfway through. Raises BackendError."""
        for side in (0, 1):
            self._agent_backend(side)
        self.judge()

    # -- control from other threads -------------------------------------------------------

    def pause(self, now: bool = False) -> None:
        """Stop after the turn in progress (a person's pending turn is abandoned). With `now`,
        stop at once: a generation in progress is cancelled within a token and its partial turn
        is discarded, never saved; that turn is played again when the episode goes on."""
        with self._lock:
            self._pause.set()
            if now:
                self._pause_now.set()
            if now or self._current_side in self._humans:
                self._turn_cancel.set()

    def stop(self) -> None:
        """End the episode now; the turn in progress is abandoned and the judge scores the rest.
        Before any turn there is nothing to judge or curate: the episode is left paused (it can
        be resumed, or deleted by whoever asked for the stop)."""
        self._stop.set()
        self._turn_cancel.set()

    def _person(self) -> HumanBackend:
        return HumanBackend(read_action=self._person_input)

    def human(self, side: int) -> HumanBackend | None:
        return self._humans.get(side)

    def is_human(self, side: int) -> bool:
        return side in self._humans

    def take_over(self, side: int) -> HumanBackend:
        """A person plays `side` from now on; a model turn in progress for it is abandoned."""
        with self._lock:
            human = self._humans.get(side) or self._person()
            self._humans[side] = human
            if self._current_side == side:
                self._turn_cancel.set()
        return human

    def hand_back(self, side: int) -> None:
        """The model plays `side` again; a pending human turn for it is abandoned."""
        if self.agent_specs[side].is_human:
            raise EpisodeError(f"side {side + 1} has no model to hand back to (it is played by a person)")
        with self._lock:
            self._humans.pop(side, None)
            if self._current_side == side:
                self._turn_cancel.set()

    def submit(self, side: int, action: AgentAction) -> None:
        human = self._humans.get(side)
        if human is None:
            raise EpisodeError(f"side {side + 1} is not played by a person")
        human.submit(action)

    def set_model(self, side: int, model: ModelSpec | str, backend: ChatBackend | None = None) -> None:
        """Swap the model (or adapter) of a side; takes effect from the next turn."""
        spec = preset_spec(as_spec(model))
        with self._lock:
            old = self._models.pop(side, None)
            if spec.is_human:
                self._humans[side] = backend if isinstance(backend, HumanBackend) else self._person()
            else:
                self._humans.pop(side, None)
                if backend is not None:
                    self._models[side] = backend
            self.agent_specs[side] = spec
            self.episode.agent_models[side] = spec.name
            self.store.save_episode(self.episode)
        if old is not None and self._current_side != side:
            old.close()

    def set_adapter(self, side: int, adapter: str | None) -> None:
        """Run `side`'s model with another adapter (a path or a registered name; None: the base
        model) from its next turn on. A backend that can swap adapters does it in place, without
        reloading the base model; any other is reloaded with the adapter. If the side is
        generating now, this waits for that turn to be committed. On failure raises BackendError
        (or EpisodeError for a side a person plays) and the side keeps what it had."""
        spec = self.agent_specs[side]
        if spec.is_human:
            raise EpisodeError(f"side {side + 1} is played by a person; it has no adapter to swap")
        wanted = spec.with_adapter(adapter)
        with self._generating[side]:
            with self._lock:
                backend = self._models.get(side)
            if isinstance(backend, AdapterSwapping):
                backend.set_adapter(resolve_adapter(wanted).adapter)
            else:
                backend = self._load(wanted, "agent")
            with self._lock:
                replaced = self._models.get(side)
                self._models[side] = backend
                self.agent_specs[side] = wanted
                self.episode.agent_models[side] = wanted.name
                self.store.save_episode(self.episode)
        if replaced is not None and replaced is not backend:
            replaced.close()  # not generating: the swap held the side's turn lock

    # -- the episode's lease -------------------------------------------------------------

    def claim(self) -> None:
        """Take the episode's lease (no other runner, here or in another process, may play it
        meanwhile) and reload the episode from the store. `run` and `step` take it themselves
        for their call; claim it first to hold it across model loading and swaps (`close`
        lets it go). Raises leases.EpisodeBusy naming the holder."""
        if self._lease is not None:
            return
        self._lease = leases.acquire(self.store, self.episode.id, self._holder)
        self._lease_lost.clear()
        self._heartbeat = leases.Heartbeat(self.store, self._lease, self._on_lease_lost)
        self.episode = self.store.episode(self.episode.id)
        self.agent_specs = _specs_of(self.episode)
        self.turns = self.store.turns(self.episode.id)

    def release(self) -> None:
        """Let the episode's lease go (nothing happens when it is not held)."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        lease, self._lease = self._lease, None
        if lease is not None:
            try:
                leases.release(self.store, lease)
            except Exception as error:  # a closed store: the lease goes stale with this process
                log.warning("the lease of episode %s was not released: %s", self.episode.id, error)

    def _on_lease_lost(self) -> None:
        log.error("episode %s was taken over by another runner; this one stops", self.episode.id)
        self._lease_lost.set()
        self.pause(now=True)

    # -- running --------------------------------------------------------------------------

    @_holding_lease
    def run(self) -> Episode:
        """Play until the episode ends, is paused, or a backend fails. Returns the episode."""
        self._pause.clear()
        self._pause_now.clear()
        if not self._begin():
            return self.episode
        # The live judge is left running on a pause, so the last turn's score still arrives;
        # the end of the episode or `close` stops it.
        while not self.finished:
            if self._pause.is_set():
                self._set_status(EpisodeStatus.paused)
                break
            if not self._advance():
                break
        return self.episode

    @_holding_lease
    def step(self) -> Turn | None:
        """Play exactly one turn (or finish the episode); leaves it paused if it goes on."""
        self._pause_now.clear()
        if not self._begin():
            return None
        before = len(self.turns)
        self._advance()  # the live judge goes on scoring the turn after the step returns
        if not self.finished and self.episode.status == EpisodeStatus.running:
            self._set_status(EpisodeStatus.paused)
        return self.turns[-1] if len(self.turns) > before else None

    def _begin(self) -> bool:
        if self.episode.status == EpisodeStatus.finished:
            has_judge = self.episode.judge_model or self._judge_backend is not None
            if has_judge and self.store.terminal_evaluation(self.episode.id) is None:
                self._terminal_evaluation()
            return False
        self.episode.last_error = ""
        self._set_status(EpisodeStatus.running)
        reason = end_reason(self.turns, self.names, self.episode.max_turns, self._stale_limit)
        if reason:
            self._finish(reason)
            return False
        if self.episode.live_eval and self._live is None:
            try:
                judge = self.judge()
            except BackendError as error:
                log.warning("live evaluation is off for this run: %s", error)
                judge = None
            if judge is not None:
                self._live = LiveEvaluator(
                    judge,
                    self.episode.id,
                    self.scenario,
                    self.characters,
                    self._store_live,
                    played=self.turns,
                    warm_up=_keeps_kv_cache(judge.backend),
                )
                # The next turn waits (a second or two, once per run) while the judge reads the
                # scene: read alongside that turn, the opening made its score come after the
                # turn after it had started, so the first turn's live score was always skipped.
                self._live.warm.wait(LIVE_WARM_UP_WAIT_S)
        return True

    @property
    def _stale_limit(self) -> int:
        return int(self.settings.get("stale_limit", DEFAULT_STALE_LIMIT))

    def _advance(self) -> bool:
        """Play one turn and finish the episode if it is over. False when it cannot go on."""
        if self._lease_lost.is_set():
            return False
        if self._stop.is_set():
            self._finish("stopped by the user")
            return False
        try:
            turn = self._play_turn()
        except BackendError as error:
            self.episode.last_error = str(error)
            self._set_status(EpisodeStatus.paused)
            return False
        except Exception as error:  # never leave an episode marked as running
            log.exception("turn %d of episode %s failed", len(self.turns), self.episode.id)
            self.episode.last_error = f"unexpected error: {type(error).__name__}: {error}"
            self._set_status(EpisodeStatus.paused)
            return False
        if turn is None:  # abandoned for a takeover, a hand-back, a pause or a stop
            if self._stop.is_set():
                self._finish("stopped by the user")
                return False
            if self._pause.is_set():
                self._set_status(EpisodeStatus.paused)
                return False
            return True
        if self._live is not None:
            self._live.request(self.turns)
        reason = end_reason(self.turns, self.names, self.episode.max_turns, self._stale_limit)
        if reason:
            self._finish(reason)
        return True

    def _play_turn(self) -> Turn | None:
        index = len(self.turns)
        side = index % 2
        with self._generating[side]:
            backend = self._agent_backend(side)  # may load a model: not under the lock
            with self._lock:
                if self._pause_now.is_set() or self._lease_lost.is_set():
                    return None
                if side in self._humans:  # taken over while its model loaded
                    backend = self._humans[side]
                elif isinstance(backend, HumanBackend) and side not in self._models:
                    return None  # handed back while the person's turn began: play it again
                self._turn_cancel.clear()
                self._current_side = side
            if not isinstance(backend, HumanBackend):
                return self._play(index, side, backend)
        return self._play(index, side, backend)  # a person's turn does not hold up a swap

    def _play(self, index: int, side: int, backend: ChatBackend) -> Turn | None:
        by_human = isinstance(backend, HumanBackend)
        messages = messages_for_turn(self.names[side], self.views[side], self.turns, self.names, side)
        self.events.turn_started(self.episode.id, index, side, by_human)
        started = time.perf_counter()
        try:
            asked = self._ask(index, side, backend, messages, by_human)
        finally:
            self._current_side = None
        if asked is None:
            return None
        kept, refused, latency_ms = asked
        turn = Turn(
            episode_id=self.episode.id,
            index=index,
            agent=side,
            action_type=kept.action.action_type,
            argument=kept.action.argument,
            model="human" if by_human else self.agent_specs[side].name,
            adapter="" if by_human else self._adapter_played(side, backend),
            by_human=by_human,
            prompt=messages,
            raw_output=kept.raw_output,
            parse_note=kept.note,
            refused=refused,
            echoes=kept.echo.turn_index if kept.echo is not None else None,
            role_slip=kept.slip or "",
            latency_ms=latency_ms or (time.perf_counter() - started) * 1000,
            prompt_tokens=kept.completion.prompt_tokens,
            cached_tokens=kept.completion.cached_tokens,
            completion_tokens=kept.completion.completion_tokens,
        )
        self.store.add_turn(turn)
        self.turns.append(turn)
        self.events.turn_committed(turn)
        return turn

    def _ask(
        self, index: int, side: int, backend: ChatBackend, messages: list[ChatMessage], by_human: bool
    ) -> tuple[_Answer, list[str], float] | None:
        """`side`'s answer, asked for again (up to `ask_again` times) while it repeats an
        earlier line or slips out of role: the least faulty answer, what was wrong with each of
        the others, and the answers' total time in ms. None when the turn was cancelled (a
        takeover); a failure of the first call is raised, a failure of a later one keeps the
        answers already given."""
        retries = 0 if by_human else int(self.settings.get("ask_again", DEFAULT_ASK_AGAIN))
        answers: list[_Answer] = []
        latency_ms = 0.0
        for attempt in range(retries + 1):
            try:
                answer = self._answer(index, side, backend, messages, attempt, by_human)
            except Cancelled:
                return None
            except BackendError:
                if not answers:
                    raise
                log.warning("turn %d: asking again for a faulty line failed; keeping the answers given", index)
                break
            answers.append(answer)
            latency_ms += answer.completion.latency_ms or 0.0
            if not answer.problem:
                break
        kept = min(answers, key=_Answer.badness)
        refused = [a.problem for a in answers if a is not kept]
        return kept, refused, latency_ms

    def _answer(
        self, index: int, side: int, backend: ChatBackend, messages: list[ChatMessage], attempt: int, by_human: bool
    ) -> _Answer:
        """One answer from `side`'s backend, streamed to the screens and the live judge, parsed,
        and checked against the lines already said. Attempt k > 0 samples k·ASK_AGAIN_HEAT hotter."""
        streamed: list[str] = []

        def on_token(piece: str) -> None:
            streamed.append(piece)
            so_far = "".join(streamed)
            self.events.token(self.episode.id, index, side, partial_argument(so_far))
            live = self._live
            if live is not None and not by_human:  # the live judge reads the turn as it comes
                live.turn_streaming(self.turns, index, side, so_far)

        temperature = float(self.settings.get("temperature", 0.7)) + attempt * ASK_AGAIN_HEAT
        completion = backend.complete(
            messages,
            schema=action_json_schema(),
            max_tokens=int(self.settings.get("max_tokens", 200)),
            temperature=temperature,
            on_token=on_token,
            cancel=self._turn_cancel,
        )
        raw_output = clean_text(completion.text or "")
        action, note = parse_action(raw_output)
        if by_human or action.action_type in (ActionType.none, ActionType.leave):
            return _Answer(completion, raw_output, action, note, None, None)
        echo = echo_of(action.argument, self.turns)
        slip = role_slip(action.argument, self.names[side], self.names[1 - side]) if action.action_type == ActionType.speak else None
        return _Answer(completion, raw_output, action, note, echo, slip)

    def _adapter_played(self, side: int, backend: ChatBackend) -> str:
        """The adapter a backend runs now (a swapping backend knows it exactly, its registered
        version included), else the one its side's spec asked for."""
        if isinstance(backend, AdapterSwapping):
            return adapter_identity(backend.adapter)
        return adapter_identity(self.agent_specs[side].adapter)

    def _finish(self, reason: str) -> None:
        if not self.turns:  # stopped before any turn: not finished, never judged
            self._stop.clear()
            self._set_status(EpisodeStatus.paused)
            return
        self._close_live(finish=True)  # the last turn's live score first, then the terminal one
        self.episode.end_reason = reason
        self._set_status(EpisodeStatus.finished)
        if self.episode.judge_model or self._judge_backend is not None:
            self._terminal_evaluation()

    def _terminal_evaluation(self) -> Evaluation:
        try:
            judge = self.judge()
            assert judge is not None
            evaluation = judge.evaluate(
                self.episode.id, self.scenario, self.characters, self.turns, kind="terminal"
            )
        except Exception as error:  # a judge that cannot load or answer is recorded, never raised
            reason = str(error) if isinstance(error, BackendError) else f"{type(error).__name__}: {error}"
            failure = AgentEvaluation(failure=f"judge model failed: {clean_text(reason)}")
            evaluation = Evaluation(
                episode_id=self.episode.id,
                kind="terminal",
                after_turn=self.turns[-1].index if self.turns else -1,
                judge_model=self.episode.judge_model,
                dimension_set=self.settings.get("dimension_set", "sotopia"),
                agents=[failure, failure],
            )
        self.store.add_evaluation(evaluation)
        self.events.evaluation(evaluation)
        return evaluation

    def _store_live(self, evaluation: Evaluation) -> None:
        try:
            self.store.add_evaluation(evaluation)
        except Exception:  # a provisional score is not worth the live judge's thread
            log.exception("a provisional evaluation of episode %s was not stored", self.episode.id)
            return
        self.events.evaluation(evaluation)

    def _close_live(self, finish: bool = False) -> None:
        if self._live is not None:
            self._live.close(finish=finish, cancel_running=True, timeout=LIVE_CLOSE_TIMEOUT_S)
            self._live = None

    def _set_status(self, status: EpisodeStatus) -> None:
        self.episode.status = status
        if self._lease_lost.is_set():
            return  # another runner has the episode now; this one writes nothing more
        self.store.save_episode(self.episode)
        self.events.status_changed(self.episode)

    def close(self) -> None:
        """Release the models and the episode's lease. The episode stays in the store as it is."""
        self.release()
        self._close_live()
        for backend in list(self._models.values()):
            backend.close()
        self._models.clear()
        if self._judge_backend is not None:
            self._judge_backend.close()
            self._judge_backend = None
            self._judge = None


@dataclass
class _Answer:
    completion: Completion
    raw_output: str
    action: AgentAction
    note: str
    echo: Echo | None
    slip: str | None

    @property
    def problem(self) -> str:
        """What is wrong with this answer ('' for nothing): a role slip, else the line repeated."""
        if self.slip:
            return self.slip
        return f"repeats turn #{self.echo.turn_index}" if self.echo is not None else ""

    def badness(self) -> tuple[bool, float]:
        """Orders answers from best: a role slip is worse than any echo, a closer echo worse than a looser one."""
        return (self.slip is not None, self.echo.similarity if self.echo is not None else 0.0)


def _specs_of(episode: Episode) -> list[ModelSpec]:
    """The sides' models as specs, read once from the names the store keeps."""
    return [as_spec(name) for name in episode.agent_models]


def _keeps_kv_cache(backend: ChatBackend) -> bool:
    """A local llama.cpp backend: worth filling its KV cache with the judge's opening early."""
    spec = getattr(backend, "spec", None)
    return spec is not None and spec.kind in LLAMA_KINDS


def run_episode(
    store: Store, setup: EpisodeSetup, events: RunnerEvents | None = None, **runner_options
) -> Episode:
    """Create an episode and play it to its end (or until it pauses on an error)."""
    episode = new_episode(store, setup)
    runner = EpisodeRunner(store, episode.id, events=events, **runner_options)
    try:
        return runner.run()
    finally:
        runner.close()


def resume_episode(
    store: Store, episode_id: str, events: RunnerEvents | None = None, **runner_options
) -> Episode:
    runner = EpisodeRunner(store, episode_id, events=events, **runner_options)
    try:
        return runner.run()
    finally:
        runner.close()
