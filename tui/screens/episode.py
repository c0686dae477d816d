"""The live episode: the transcript streams, scores update, a person can take over either side.

The runner plays in a thread worker; its callbacks come back as messages (tui.messages).
Everything the runner commits is in the store the moment it happens, so leaving this screen,
a model failure or a crash loses nothing already played.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Static
from textual.worker import Worker, WorkerState

from sotopia_pi.adapters import list_adapters
from sotopia_pi.backends import ChatBackend, create_backend, parse_model_name
from sotopia_pi.episode import Episode, EpisodeStatus, Evaluation
from sotopia_pi.judge import load_dimension_set
from sotopia_pi.runner import EpisodeError, EpisodeRunner
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

ACTIVE = (WorkerState.PENDING, WorkerState.RUNNING)
STREAM_REDRAW_SECONDS = 0.05


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
        self.runner = EpisodeRunner(
            store, episode_id, events=PostingEvents(self), backend_factory=backend_factory
        )
        self.episode: Episode = self.runner.episode.model_copy(deep=True)
        self.autostart = autostart
        self.dimensions = load_dimension_set(self.episode.settings.get("dimension_set", "sotopia"))
        self.names = self.runner.names
        self._worker: Worker | None = None
        self._runner_busy = threading.Event()
        self._release_lock = threading.Lock()
        self._released = False
        self._pausing = False
        self._leaving = False
        self._current: tuple[int, int, bool] | None = None  # (turn index, side, by a person)
        self._error = ""
        self._streamed: tuple[int, str] | None = None  # (turn index, argument) not yet drawn
        self._busy: dict[str, EpisodeScreen] = {}  # the app's episodes with a live runner
        self.person_sides = {side for side in (0, 1) if self.runner.is_human(side)}
        self._sync_lock = threading.Lock()
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
        self._busy = self.app.busy_episodes  # type: ignore[attr-defined]
        self._busy[self.episode.id] = self
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
    def playing(self) -> bool:
        """Whether the runner's thread is at work. (Not the worker's state: Textual marks a
        worker cancelled when its screen closes, while the thread plays on to the turn's end.)"""
        return self._runner_busy.is_set()

    def side_label(self, side: int) -> str:
        """Who plays the side now, and who played its earlier turns when that was someone else."""
        model = self.episode.agent_models[side]
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
        if self._pausing and self.playing:
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
        if self.playing:
            return
        self._error = ""
        self._pausing = False
        self._runner_busy.set()
        self._worker = self._play(step)
        self._refresh_header()

    @work(thread=True, exit_on_error=False, group="episode", description="playing the episode")
    def _play(self, step: bool) -> None:
        try:
            if step:
                self.runner.step()
            else:
                self.runner.run()
        finally:
            self._runner_busy.clear()
            if self._leaving:  # the screen is gone and will not hear that the worker ended
                self._release()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "control" and event.state == WorkerState.ERROR:
            self.notify(str(event.worker.error), title="Could not switch sides", severity="error")
        if event.worker.group == "adapter" and event.state == WorkerState.ERROR:
            self.notify(
                f"{event.worker.error}\nThe side keeps the model it had.",
                title="Could not swap the adapter",
                severity="error",
                timeout=15,
            )
        if event.worker is not self._worker or event.state in ACTIVE:
            return
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self._error = f"The episode stopped on an error: {describe(error)}"
            self.notify(describe(error), title="Episode error", severity="error", timeout=10)
        self._pausing = False
        self._current = None
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
        self._current = (message.index, message.agent, message.by_human)
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
        self._current = None
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
            self.runner.submit(message.side, message.action)
        except EpisodeError as error:
            self.notify(describe(error), severity="error")

    # -- key actions ----------------------------------------------------------------------

    def action_toggle_pause(self) -> None:
        if self.finished:
            self.notify("The episode is over.")
        elif self.playing:
            self._pausing = True
            self.runner.pause()
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
        self.runner.stop()
        if self.runner.turns:
            self.notify("Stopping: the judge scores what was played.")
        else:
            self._stopping_empty = True
            self.notify("Stopping before any turn: there is nothing to judge.")
        if not self.playing:
            self._start(step=False)

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
        # The screen changes at once (so the next keys go to the text box); the runner is told
        # off the UI thread, since it may hold its lock while it loads a model.
        self.person_sides.add(side)
        self._refresh_header()
        self._show_takeover(side)
        self.query_one("#argument", Input).focus()
        self.notify(f"You play {self.names[side]} now. ^b hands it back to its model.", timeout=4)
        self._sync_runner()

    def action_hand_back(self) -> None:
        panel = self.query_one(TakeoverPanel)
        side = panel.side if panel.display else None
        if side is None:
            self.notify("No side is played by you.")
            return
        model = self.episode.agent_models[side]
        if parse_model_name(model).is_human:
            self.notify(f"{self.names[side]} has no model to hand back to: you play it in this episode.")
            return
        self.person_sides.discard(side)
        self.query_one(Transcript).focus()
        self._refresh_header()
        self._show_takeover()
        self.notify(f"{self.names[side]} is played by {model} again.", timeout=4)
        self._sync_runner()

    @work(thread=True, exit_on_error=False, group="control", description="switching who plays a side")
    def _sync_runner(self) -> None:
        """Make the runner match `person_sides`. Each call applies the latest wish, so quick
        takeovers and hand-backs cannot be applied out of order."""
        with self._sync_lock:
            for side in (0, 1):
                wanted = side in self.person_sides
                if wanted and not self.runner.is_human(side):
                    self.runner.take_over(side)
                elif not wanted and self.runner.is_human(side):
                    self.runner.hand_back(side)

    # -- adapters -------------------------------------------------------------------------

    def _show_swaps(self) -> None:
        """Mark on the score chart the turns from which a side played with another adapter."""
        changes = self.query_one(Transcript).changes
        swaps = [(c.index, c.side, adapter_label(c.adapter)) for c in changes if not c.first]
        self.query_one(ScorePanel).show_swaps(swaps)

    def model_sides(self) -> dict[int, str]:
        """The sides a model plays (possibly on hold while a person plays it), with labels."""
        return {
            side: f"{self.names[side]} (side {side + 1})"
            for side in (0, 1)
            if not parse_model_name(self.episode.agent_models[side]).is_human
        }

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
        specs = {side: parse_model_name(self.episode.agent_models[side]) for side in sides}
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
        self._swap_adapter(pick.side, reference)

    @work(thread=True, exit_on_error=False, group="adapter", description="swapping an adapter")
    def _swap_adapter(self, side: int, reference: str | None) -> None:
        """Off the UI thread: the runner waits for the side's turn in progress to be committed."""
        self.runner.set_adapter(side, reference)
        self.app.call_from_thread(self._adapter_swapped, side)

    def _adapter_swapped(self, side: int) -> None:
        self.episode.agent_models[side] = self.runner.episode.agent_models[side]
        self._refresh_header()

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
            self.runner.pause()
            self.notify("The episode pauses after this turn; resume it from the inspector (F3).")
        self.dismiss()

    def on_unmount(self) -> None:
        self._leaving = True
        if self.playing:
            self.pause_now()  # the worker closes the runner when it returns
        else:
            # Freeing the models waits for any call still using them (a live judge): never on
            # the UI thread.
            threading.Thread(target=self._release, name="close-episode").start()

    def pause_now(self) -> None:
        """Pause at once rather than after the turn in progress (off the UI thread, since the
        runner may hold its lock)."""
        self._pausing = True
        threading.Thread(target=self._interrupt, name="pause-episode").start()

    def _interrupt(self) -> None:
        """Pause and abandon the model's turn in progress (it is played again on resume).
        The runner has no call for that alone; a takeover of the side that is generating
        cancels its turn, and with the pause set the runner stops there. The takeover lives
        only in this runner, which is about to close: the stored episode is unchanged."""
        self.runner.pause()
        current = self._current
        if current is not None and not current[2]:
            self.runner.take_over(current[1])

    def _release(self) -> None:
        """Free the models, then let the episode be opened again (any thread, once)."""
        with self._release_lock:
            if self._released:
                return
            self._released = True
        try:
            self.runner.close()
        finally:
            self._busy.pop(self.episode.id, None)
