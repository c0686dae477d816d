"""The live episode: the transcript streams, scores update, a person can take over either side.

A RunnerSession (sotopia_pi/session.py) plays the episode in its own thread and owns its
control; this screen drives it and shows what it reports, its events coming back as messages.
Everything the runner commits is in the store the moment it happens, so leaving this screen,
a model failure or a crash loses nothing already played.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from sotopia_pi.adapters import list_adapters
from sotopia_pi.backends import ChatBackend, ModelSpec, create_backend
from sotopia_pi.episode import Episode, EpisodeStatus, Evaluation
from sotopia_pi.judge import load_dimension_set
from sotopia_pi.runner import EpisodeError, EpisodeRunner
from sotopia_pi.session import RunnerSession
from sotopia_pi.store import Store

from ..clipboard import copy, turn_as_text
from ..errors import describe
from ..messages import EvaluationArrived, PostingEvents, StatusChanged, TokenStreamed, TurnCommitted, TurnStarted
from ..players import side_players
from ..widgets.scores import ScorePanel
from ..widgets.takeover import ActionChosen, TakeoverPanel
from ..widgets.transcript import Transcript, adapter_label
from .adapter_picker import AdapterPick, AdapterPickerScreen
from .confirm import ConfirmScreen
from .reasoning import ReasoningScreen

STREAM_REDRAW_SECONDS = 0.05


class RunEnded(Message):
    def __init__(self, error: BaseException | None) -> None:
        super().__init__()
        self.error = error


class AdapterSwapped(Message):
    def __init__(self, side: int, spec: ModelSpec) -> None:
        super().__init__()
        self.side = side
        self.spec = spec


class SwapFailed(Message):
    def __init__(self, side: int, error: BaseException) -> None:
        super().__init__()
        self.side = side
        self.error = error


class ScreenEvents(PostingEvents):
    """The session's events for the live screen: posted as messages, except `closed`, which
    comes after the screen is gone and frees the episode for the app at once."""

    def __init__(self, screen: EpisodeScreen) -> None:
        super().__init__(screen)
        self.screen = screen

    def run_ended(self, episode: Episode, error: BaseException | None) -> None:
        self._post(RunEnded(error))

    def model_changed(self, side: int, spec: ModelSpec) -> None:
        self._post(AdapterSwapped(side, spec))

    def swap_failed(self, side: int, error: BaseException) -> None:
        self._post(SwapFailed(side, error))

    def closed(self) -> None:
        self.screen.busy.pop(self.screen.episode.id, None)


def official_or_latest(history: list[Evaluation]) -> Evaluation | None:
    """The terminal evaluation when there is one, else the newest provisional one."""
    terminal = [e for e in history if e.kind == "terminal"]
    if terminal:
        return terminal[-1]
    return history[-1] if history else None


class EpisodeScreen(Screen):
    BINDINGS = [
        Binding("p", "toggle_pause", "Pause/resume"),
        Binding("n", "step", "Step"),
        Binding("s", "stop", "Stop"),
        Binding("1", "take_over(0)", "Play a side", key_display="1/2"),
        Binding("2", "take_over(1)", "", show=False),  # listed with 1
        Binding("h,ctrl+b", "hand_back", "Hand back", key_display="h/^b"),
        Binding("r", "reasoning", "Reasons"),
        Binding("d", "chart_dimension", "Chart"),
        Binding("a", "pick_adapter", "Adapter"),
        Binding("escape", "leave", "Back", show=False),
        Binding("i", "copy_id", "Copy episode id", show=False),
        Binding("c", "copy_turn", "Copy the newest turn", show=False),
    ]

    def __init__(
        self,
        store: Store,
        episode_id: str,
        *,
        autostart: bool = True,
        backend_factory: Callable[..., ChatBackend] = create_backend,
    ) -> None:
        super().__init__()
        self.store = store
        self.session = RunnerSession(store, episode_id, events=ScreenEvents(self), backend_factory=backend_factory)
        self.episode: Episode = self.session.episode.model_copy(deep=True)
        self.autostart = autostart
        self.dimensions = load_dimension_set(self.episode.settings.get("dimension_set", "sotopia"))
        self.names = self.runner.names
        self._error = ""
        self._streamed: tuple[int, str] | None = None  # (turn index, argument) not yet drawn
        self.busy: dict[str, EpisodeScreen] = {}  # the app's episodes with a live session
        self._stopping_empty = False  # a stop asked before any turn was played
        self._discarded = False

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="episode-header")
        yield Static(id="episode-banner")
        with Horizontal(id="episode-body"):
            yield Transcript(self.names, id="transcript")
            with Vertical(id="episode-side"):
                yield ScorePanel(self.names, self.dimensions, id="scores")
                yield TakeoverPanel(id="takeover")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.busy = self.app.busy_episodes  # type: ignore[attr-defined]
        self.busy[self.episode.id] = self
        self.query_one(Transcript).load(self.runner.turns)
        self._refresh_scores()
        self._show_swaps()
        self._show_takeover()
        self._error = self.episode.last_error
        self._refresh_header()
        if self.autostart and not self.finished:
            self._start(step=False)

    # -- state ----------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.episode.status in (EpisodeStatus.finished, EpisodeStatus.failed)

    @property
    def runner(self) -> EpisodeRunner:
        return self.session.runner

    @property
    def playing(self) -> bool:
        """Whether the session's thread is at work (a turn, or the judge's terminal score)."""
        return self.session.playing

    @property
    def person_sides(self) -> frozenset[int]:
        return self.session.person_sides

    @property
    def _current(self) -> tuple[int, int, bool] | None:
        """(turn index, side, by a person) of the turn in progress, or None."""
        current = self.session.current
        return (current.index, current.side, current.by_human) if current is not None else None

    def side_label(self, side: int) -> str:
        """Who plays the side now, and who played its earlier turns when that was someone else."""
        model = self.session.specs[side].name
        person, by_model = side_players(self.runner.turns).get(side, (False, False))
        if side in self.person_sides:
            player = f"YOU (took over from {model})" if by_model else "YOU"
        elif person and not by_model:
            player = "YOU played it" if self.finished else f"YOU so far; {model} from the next turn"
        else:
            player = f"{model} and YOU" if person else model
        return f"{self.names[side]} (side {side + 1}): {player}"

    def _refresh_header(self) -> None:
        episode = self.episode
        judge = episode.judge_model or "none (no scores)"
        live = "live scoring on" if episode.live_eval else "live scoring off"
        lines = Text()
        lines.append(f"{self.runner.scenario.codename or self.runner.scenario.id}  ", style="bold")
        lines.append(f"{self.side_label(0)}  vs  {self.side_label(1)}\n")
        lines.append(f"judge: {judge} ({live})   ", style="dim")
        status = episode.status.value
        if self.session.pausing and self.playing:
            status = "pausing after this turn"
        elif self.finished and self.playing and episode.judge_model:
            status = "finished; the judge is scoring the whole episode…"
        lines.append(f"status: {status}", style="bold")
        lines.append(f" · {len(self.runner.turns)} of {episode.max_turns} turns")
        if self._current is not None and self.playing:
            index, side, by_human = self._current
            whose = "your move" if by_human else "thinking"
            lines.append(f" · turn #{index}: {self.names[side]} {whose}")
        if episode.end_reason:
            lines.append(f" · ended: {episode.end_reason}")
        self.query_one("#episode-header", Static).update(lines)
        banner = self.query_one("#episode-banner", Static)
        banner.set_class(bool(self._error), "error")
        banner.update(
            f"{self._error}\nThe episode is paused and every turn played so far is saved. "
            "Press p to retry, or Esc to leave it and resume it later from the inspector."
            if self._error
            else ""
        )

    def _refresh_scores(self) -> None:
        history = self.store.evaluations(self.episode.id)
        if not self.episode.judge_model:
            note = "No judge for this episode."
        elif not self.episode.live_eval:
            note = "Live scoring is off: scores come when the episode ends."
        else:
            note = ""
        panel = self.query_one(ScorePanel)
        panel.show(official_or_latest(history), history, note)
        panel.set_judging(self.judging and not any(e.kind == "terminal" for e in history))

    @property
    def judging(self) -> bool:
        """Whether the judge is making the terminal evaluation now."""
        return self.finished and self.playing and bool(self.episode.judge_model)

    def action_chart_dimension(self) -> None:
        dimension = self.query_one(ScorePanel).cycle_dimension()
        self.notify(f"The chart shows {'overall and ' + dimension if dimension else 'the overall scores'}.", timeout=3)

    def _show_takeover(self, side: int | None = None) -> None:
        """Show the panel for `side` (or for whichever side a person plays), or hide it."""
        panel = self.query_one(TakeoverPanel)
        humans = sorted(self.person_sides)
        if side is None or side not in humans:
            side = humans[0] if humans else None
            if self._current is not None and self._current[1] in humans:
                side = self._current[1]
        if self._current is not None and self._current[2] and self._current[1] in humans:
            side = self._current[1]  # a move the person owes comes first
        panel.display = side is not None and not self.finished
        self.query_one("#episode-side").set_class(bool(panel.display), "person")
        if side is None or self.finished:
            return
        panel.play(side, self.names[side], self.runner.views[side])
        waiting = self._current is not None and self._current[1] == side and self._current[2]
        model_turn = self._current is not None and self._current[1] == side and not self._current[2]
        if waiting and self.playing:
            panel.set_turn(True, "Your move. Choose an action type, type the argument, press Enter.")
        elif not self.playing:
            panel.set_turn(False, "Paused: p resumes, n plays one turn.")
        elif model_turn:  # taken over mid-generation: the model is being stopped
            panel.set_turn(False, f"Stopping the model's turn for {self.names[side]}; your move comes next. Type ahead.")
        else:
            panel.set_turn(False, "Waiting for the other side…")

    # -- running --------------------------------------------------------------------------

    def _start(self, step: bool) -> None:
        self._error = ""
        if self.session.start(step=step):
            self._refresh_header()

    @on(RunEnded)
    def _run_ended(self, message: RunEnded) -> None:
        if message.error is not None:
            self._error = f"The episode stopped on an error: {describe(message.error)}"
            self.notify(describe(message.error), title="Episode error", severity="error", timeout=10)
        self.query_one(Transcript).drop_pending()
        self.query_one(ScorePanel).set_judging(False)
        self._refresh_header()
        self._show_takeover()
        empty_stop = self.episode.status == EpisodeStatus.paused and not self.runner.turns
        if self._stopping_empty and empty_stop and not self._error:
            self._ask_keep_or_discard()

    # -- runner events --------------------------------------------------------------------

    @on(TurnStarted)
    def _turn_started(self, message: TurnStarted) -> None:
        self.query_one(Transcript).start_turn(message.index, message.agent, message.by_human)
        self._refresh_header()
        self._show_takeover(message.agent if message.by_human else None)

    @on(TokenStreamed)
    def _token(self, message: TokenStreamed) -> None:
        # Tokens come faster than anyone reads; redrawing (and re-laying out) the transcript
        # for each one would take time from the keyboard. Show the newest text every 50 ms.
        first = self._streamed is None
        self._streamed = (message.index, message.argument)
        if first:
            self.set_timer(STREAM_REDRAW_SECONDS, self._show_streamed)

    def _show_streamed(self) -> None:
        if self._streamed is not None:
            self.query_one(Transcript).stream(*self._streamed)
            self._streamed = None

    @on(TurnCommitted)
    def _turn_committed(self, message: TurnCommitted) -> None:
        self.query_one(Transcript).commit(message.turn)
        self._show_swaps()
        self._refresh_header()
        self._show_takeover()

    @on(EvaluationArrived)
    def _evaluation(self, message: EvaluationArrived) -> None:
        self._refresh_scores()
        if message.evaluation.kind == "terminal":
            failed = not message.evaluation.ok
            self.notify(
                "The judge could not score every side; see the score panel."
                if failed
                else "Terminal (official) scores are in.",
                severity="warning" if failed else "information",
            )

    @on(StatusChanged)
    def _status(self, message: StatusChanged) -> None:
        self.episode = message.episode
        if message.episode.last_error:
            self._error = f"The model failed: {message.episode.last_error}"
        self._refresh_header()
        self._show_takeover()
        if self.judging:
            self._refresh_scores()

    # -- the person's actions -------------------------------------------------------------

    @on(ActionChosen)
    def _action_chosen(self, message: ActionChosen) -> None:
        if self._current is None or self._current[1] != message.side or not self._current[2]:
            self.notify("It is not your turn yet.", severity="warning")
            return
        try:
            self.session.submit(message.side, message.action)
        except EpisodeError as error:
            self.notify(describe(error), severity="error")

    # -- key actions ----------------------------------------------------------------------

    def action_toggle_pause(self) -> None:
        if self.finished:
            self.notify("The episode is over.")
        elif self.playing:
            self.session.pause()
            self._refresh_header()
        else:
            self._start(step=False)

    def action_step(self) -> None:
        if self.finished:
            self.notify("The episode is over.")
        elif self.playing:
            self.notify("Pause first (p); then n plays one turn at a time.")
        else:
            self._start(step=True)

    def action_stop(self) -> None:
        if self.finished:
            self.notify("The episode is already over.")
            return
        if self.runner.turns:
            self.notify("Stopping: the judge scores what was played.")
        else:
            self._stopping_empty = True
            self.notify("Stopping before any turn: there is nothing to judge.")
        self.session.stop()
        self._refresh_header()

    def _ask_keep_or_discard(self) -> None:
        """After a stop before any turn: the episode is paused, not finished; keep it or not."""
        self._stopping_empty = False
        self.app.push_screen(
            ConfirmScreen(
                "No turn was played, so there is nothing to judge or curate.\n"
                "Discard this episode, or keep it to resume later (p here, or from the inspector)?",
                yes="Discard",
                no="Keep",
            ),
            self._discard_if,
        )

    def _discard_if(self, discard: bool | None) -> None:
        if not discard:
            self.notify("Kept: it is paused with no turns; p starts it, or resume it from the inspector.")
            return
        if self.runner.turns or self.playing:
            self.notify("A turn was played meanwhile; the episode is kept.", severity="warning")
            return
        self._discarded = True
        self.store.delete_episode(self.episode.id)
        self.notify("The episode was discarded.")
        self.dismiss()

    def action_take_over(self, side: int) -> None:
        if self.finished:
            self.notify("The episode is over; there is nothing left to play.")
            return
        self.session.take_over(side)  # a model generating for the side is cancelled at once
        self._refresh_header()
        self._show_takeover(side)
        self.query_one("#argument", Input).focus()
        self.notify(f"You play {self.names[side]} now. ^b hands it back to its model.", timeout=4)

    def action_hand_back(self) -> None:
        panel = self.query_one(TakeoverPanel)
        side = panel.side if panel.display else None
        if side is None:
            self.notify("No side is played by you.")
            return
        spec = self.session.specs[side]
        if spec.is_human:
            self.notify(f"{self.names[side]} has no model to hand back to: you play it in this episode.")
            return
        try:
            self.session.hand_back(side)
        except EpisodeError as error:
            self.notify(describe(error), title="Could not switch sides", severity="error")
            return
        self.query_one(Transcript).focus()
        self._refresh_header()
        self._show_takeover()
        self.notify(f"{self.names[side]} is played by {spec.name} again.", timeout=4)

    # -- adapters -------------------------------------------------------------------------

    def _show_swaps(self) -> None:
        """Mark on the score chart the turns from which a side played with another adapter."""
        changes = self.query_one(Transcript).changes
        swaps = [(c.index, c.side, adapter_label(c.adapter)) for c in changes if not c.first]
        self.query_one(ScorePanel).show_swaps(swaps)

    def model_sides(self) -> dict[int, str]:
        """The sides a model plays (possibly on hold while a person plays it), with labels."""
        return {side: f"{self.names[side]} (side {side + 1})" for side in self.session.model_sides()}

    def action_pick_adapter(self) -> None:
        if self.finished:
            self.notify("The episode is over; there is no next turn to play with another adapter.")
            return
        sides = self.model_sides()
        if not sides:
            self.notify("Both sides are played by people; only a model has an adapter.")
            return
        try:
            records = list_adapters(self.store)
        except Exception as error:  # a record that no longer validates
            self.notify(describe(error), title="Cannot read the adapters", severity="error")
            return
        specs = {side: self.session.specs[side] for side in sides}
        self.app.push_screen(
            AdapterPickerScreen(
                records,
                title="Swap the adapter from the side's next turn (the base model stays loaded)",
                sides=sides,
                side=min(sides),
                bases={side: spec.with_adapter(None).name for side, spec in specs.items()},
                current={side: adapter_label(spec.adapter) if spec.adapter else None for side, spec in specs.items()},
            ),
            self._adapter_picked,
        )

    def _adapter_picked(self, pick: AdapterPick | None) -> None:
        if pick is None:
            return
        reference = pick.record.reference if pick.record is not None else None
        what = f"adapter {reference}" if reference else "the base model"
        self.notify(f"{self.names[pick.side]} plays with {what} from its next turn.", timeout=4)
        self.session.swap_adapter_later(pick.side, reference)  # waits for the side's turn in progress

    @on(AdapterSwapped)
    def _adapter_swapped(self, message: AdapterSwapped) -> None:
        self.episode.agent_models[message.side] = message.spec.name
        self._refresh_header()

    @on(SwapFailed)
    def _swap_failed(self, message: SwapFailed) -> None:
        self.notify(
            f"{describe(message.error)}\nThe side keeps the model it had.",
            title="Could not swap the adapter",
            severity="error",
            timeout=15,
        )

    def action_copy_id(self) -> None:
        copy(self.app, self.episode.id, "the episode id")

    def action_copy_turn(self) -> None:
        if not self.runner.turns:
            self.notify("No turn played yet.")
            return
        turn = self.runner.turns[-1]
        copy(self.app, turn_as_text(turn, self.names), f"turn #{turn.index}")

    def action_reasoning(self) -> None:
        evaluation = self.query_one(ScorePanel).evaluation
        if evaluation is None:
            self.notify("No scores yet.")
            return
        self.app.push_screen(ReasoningScreen(evaluation, self.names, self.dimensions))

    def action_leave(self) -> None:
        if isinstance(self.focused, Input):
            self.query_one(Transcript).focus()
            return
        if self.playing:
            self.notify("The episode is paused; resume it from the inspector (F3).")
        self.dismiss()

    def on_unmount(self) -> None:
        # A turn in progress is cancelled and played again on resume; the models are freed in
        # the background (that waits for any call still using them, such as a live judge).
        self.session.close(wait=False)

    def pause_now(self) -> None:
        """Pause at once rather than after the turn in progress (the app quitting)."""
        self.session.pause(now=True)
        self._refresh_header()
