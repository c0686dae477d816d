"""Train: fine-tune a LoRA adapter on a curated snapshot, watch it learn, get the adapter.

The training itself runs in its own process (sotopia_pi.training.worker, started by the
launcher); a thread worker here reads its progress events and posts them to the screen, so the
app, and an episode playing in it, stay responsive. Cancel asks the process to save a checkpoint
and stop; Resume continues from that checkpoint. A finished run is converted and registered by
the engine (finish_training), and the screen shows the adapter and its held-out loss.
"""

from __future__ import annotations

import shutil
from typing import Any

from pydantic import ValidationError
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, ProgressBar, RichLog, Select, Static
from textual.worker import Worker, WorkerState
from textual_plotext import PlotextPlot

from sotopia_pi.adapters import AdapterError, AdapterRecord, check_adapter_name
from sotopia_pi.dataset.snapshots import SnapshotManifest, list_snapshots
from sotopia_pi.store import Store
from sotopia_pi.training.config import TrainConfig
from sotopia_pi.training.launcher import (
    TrainingEvent,
    TrainingPlan,
    TrainingRun,
    finish_training,
    launch_training,
    plan_training,
)

from ..widgets.fkeys import FKeyBar
from .adapter_picker import heldout_summary

DEFAULT_BASE = "embedded"


def clock(seconds: float | None) -> str:
    """`1:05:09`, `5:09` or `-`."""
    if seconds is None or seconds < 0:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def plan_text(plan: TrainingPlan, resumed: bool = False) -> Text:
    config = plan.config
    text = Text()
    text.append("Resuming " if resumed else "Plan for ", style="bold")
    text.append(f"{config.name}", style="bold cyan")
    text.append(f" on snapshot {config.snapshot} · base {config.base}\n")
    text.append(f"{plan.train_examples} examples", style="bold")
    text.append(f" ({config.layout} layout) · {plan.answers} answers · {plan.eval_examples} held out\n")
    text.append(f"{plan.train_tokens} tokens ({plan.target_tokens} learned) · {plan.steps} steps · {config.epochs:g} epochs\n")
    if plan.dropped_examples:
        text.append(f"{plan.dropped_examples} examples do not fit in {config.max_length} tokens and are left out\n", style="yellow")
    text.append("estimated time: ", style="bold")
    text.append(f"about {clock(plan.estimated_seconds)} on 2 CPU cores")
    return text


def result_text(record: AdapterRecord) -> Text:
    text = Text()
    text.append("Adapter registered: ", style="bold green")
    text.append(f"{record.reference}", style="bold")
    text.append(f" ({record.status}) on {record.base_model}\n")
    base = record.metrics.get("heldout_loss_base")
    adapter = record.metrics.get("heldout_loss_adapter")
    summary = heldout_summary(record)
    if summary:
        better = adapter < base
        text.append(f"{summary} (base → adapter) ")
        change = (adapter - base) / base * 100 if base else 0.0
        text.append(f"{change:+.1f}%", style="bold green" if better else "bold red")
        if not better:
            text.append("  the adapter does not beat the base on held-out episodes", style="red")
    else:
        text.append("no held-out loss (the snapshot had no episode to hold out)", style="dim")
    text.append("\nPlay against it: library (F2), ^p. Swap it into a live episode: a.", style="dim")
    return text


class TrainScreen(Screen):
    SUB_TITLE = "Train — fine-tune an adapter on a curated snapshot"
    BINDINGS = [
        Binding("ctrl+p", "plan", "Plan"),
        Binding("ctrl+r", "start", "Start"),
        Binding("ctrl+s", "cancel", "Cancel (checkpoint, stop)"),
        Binding("ctrl+n", "resume", "Resume"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.snapshots: list[SnapshotManifest] = []
        self.plan: TrainingPlan | None = None
        self.plan_key: str | None = None  # the form values the plan was made for
        self.unlaunched: TrainingPlan | None = None  # planned here, never started: replanning removes it
        self.run: TrainingRun | None = None
        self.record: AdapterRecord | None = None
        self.losses: list[tuple[int, float]] = []
        self.eval_losses: list[tuple[float, float]] = []
        self.events: list[TrainingEvent] = []
        self._start_after_plan = False

    @property
    def store(self) -> Store:
        return self.app.store  # type: ignore[attr-defined]

    @property
    def running(self) -> bool:
        return self.run is not None

    def compose(self) -> ComposeResult:
        yield FKeyBar()
        with Horizontal(id="train"):
            with VerticalScroll(id="train-form"):
                yield Label("Snapshot", classes="section")
                yield Select([], prompt="a curated snapshot", id="train-snapshot")
                yield Label("Base model", classes="section")
                yield Input(DEFAULT_BASE, placeholder="embedded, hf:DIR, hf:DIR#gguf=FILE", id="train-base")
                yield Label("Adapter name", classes="section")
                yield Input(placeholder="e.g. bc-1", id="train-name")
                yield Label("Epochs · max steps · max tokens per example", classes="section")
                with Horizontal(classes="train-numbers"):
                    yield Input(placeholder="2 epochs", id="train-epochs", classes="train-number")
                    yield Input(placeholder="all steps", id="train-steps", classes="train-number")
                    yield Input(placeholder="2048 tok", id="train-length", classes="train-number")
                with Horizontal(id="train-buttons"):
                    yield Button("Plan ^p", id="train-plan-button")
                    yield Button("Start ^r", id="train-start", variant="success")
                    yield Button("Cancel ^s", id="train-cancel", variant="warning")
                    yield Button("Resume ^n", id="train-resume")
            with Vertical(id="train-live"):
                yield Static(id="train-status")
                yield ProgressBar(id="train-progress", show_eta=False)
                yield Static(id="train-plan")
                yield Static(id="train-result")
                yield PlotextPlot(id="train-plot")
                yield RichLog(id="train-log", wrap=True, markup=False, max_lines=500)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#train-progress", ProgressBar).update(total=1, progress=0)
        self.query_one("#train-name", Input).focus()
        self._draw_plot()
        self._show_status("Pick a snapshot and a name; ^p shows the plan, ^r starts.")
        self._update_buttons()

    def on_screen_resume(self) -> None:
        self.load_snapshots()

    def on_unmount(self) -> None:
        if self.run is not None:
            self.run.cancel()  # the worker saves a checkpoint: Resume continues it next time
        self._discard_unlaunched()

    def _discard_unlaunched(self) -> None:
        """Remove the run folder of a plan this screen made and never started (so that the
        name can be planned again with other options). A folder a worker ever ran in stays."""
        plan, self.unlaunched = self.unlaunched, None
        if plan is not None and not (plan.run_dir / "worker.log").exists():
            shutil.rmtree(plan.run_dir, ignore_errors=True)

    # -- the form -------------------------------------------------------------------------

    def load_snapshots(self) -> None:
        try:
            self.snapshots = list_snapshots(self.store)
        except Exception as error:  # a manifest that no longer validates
            self._show_error(f"The snapshots could not be read: {error}")
            return
        select = self.query_one("#train-snapshot", Select)
        chosen = select.value
        select.set_options(
            (f"{s.name}  ({s.examples} examples, {len(s.sides)} sides)", s.name) for s in reversed(self.snapshots)
        )
        names = [s.name for s in self.snapshots]
        if isinstance(chosen, str) and chosen in names:
            select.value = chosen
        elif names:
            select.value = names[-1]  # the newest
        else:
            self._show_status("No snapshot yet: make one in Curation (F6, n), then come back (F7).")

    def form_config(self) -> TrainConfig | None:
        """The config the form describes, or None after showing what is wrong."""
        snapshot = self.query_one("#train-snapshot", Select).value
        if not isinstance(snapshot, str):
            self._show_error("Pick a snapshot first (make one in Curation, F6).")
            return None
        name = self.query_one("#train-name", Input).value.strip()
        if not name:
            self._show_error("Give the adapter a name.")
            return None
        try:
            check_adapter_name(name)
        except AdapterError as error:
            self._show_error(str(error))
            return None
        options: dict[str, Any] = {
            "snapshot": snapshot,
            "base": self.query_one("#train-base", Input).value.strip() or DEFAULT_BASE,
            "name": name,
        }
        for widget_id, field, kind in (
            ("#train-epochs", "epochs", float),
            ("#train-steps", "max_steps", int),
            ("#train-length", "max_length", int),
        ):
            raw = self.query_one(widget_id, Input).value.strip()
            if not raw:
                continue
            try:
                options[field] = kind(raw)
            except ValueError:
                self._show_error(f"{field.replace('_', ' ')} must be a number, not {raw!r}.")
                return None
        try:
            return TrainConfig(**options)
        except ValidationError as error:
            item = error.errors()[0]
            where = ".".join(str(part) for part in item["loc"])
            self._show_error(f"{where}: {str(item['msg']).removeprefix('Value error, ')}")
            return None

    @staticmethod
    def config_key(config: TrainConfig) -> str:
        return config.model_dump_json()

    @on(Button.Pressed, "#train-plan-button")
    def action_plan(self) -> None:
        self._plan(start=False)

    @on(Button.Pressed, "#train-start")
    def action_start(self) -> None:
        if self.running:
            self.notify("A training run is already going; ^s cancels it.")
            return
        config = self.form_config()
        if config is None:
            return
        if self.plan is not None and self.plan_key == self.config_key(config):
            self._launch(self.plan, resume=False)
        else:
            self._plan(start=True)

    @on(Button.Pressed, "#train-cancel")
    def action_cancel(self) -> None:
        if self.run is None:
            self.notify("No training run is going.")
            return
        self.run.cancel()
        self._show_status("Cancelling: the worker saves a checkpoint after its current step, then stops…")

    @on(Button.Pressed, "#train-resume")
    def action_resume(self) -> None:
        if self.running:
            self.notify("A training run is already going.")
            return
        config = self.form_config()
        if config is not None:
            self._show_status(f"Reading run {config.name}…")
            self._plan_worker(config, resume=True, start=True)

    def _plan(self, start: bool) -> None:
        if self.running:
            self.notify("A training run is going; its plan is shown.")
            return
        config = self.form_config()
        if config is None:
            return
        if self.plan is not None and self.plan_key == self.config_key(config):
            self._show_plan(self.plan)
            if start:
                self._launch(self.plan, resume=False)
            return
        self._show_status("Planning: reading the snapshot and tokenizing its examples…")
        self._plan_worker(config, resume=False, start=start)

    @work(thread=True, exclusive=True, group="train-plan", exit_on_error=False, description="planning a training run")
    def _plan_worker(self, config: TrainConfig, resume: bool, start: bool) -> None:
        self._discard_unlaunched()
        plan = plan_training(self.store, config, resume=resume)
        if not resume:
            self.unlaunched = plan
        self.app.call_from_thread(self._planned, plan, config, resume, start)

    def _planned(self, plan: TrainingPlan, config: TrainConfig, resume: bool, start: bool) -> None:
        self.plan = plan
        self.plan_key = self.config_key(config)
        self._show_plan(plan, resumed=resume)
        if start:
            self._launch(plan, resume=resume)
        else:
            self._show_status("Planned. ^r starts training.")

    def _show_plan(self, plan: TrainingPlan, resumed: bool = False) -> None:
        self.query_one("#train-plan", Static).update(plan_text(plan, resumed))

    # -- the run --------------------------------------------------------------------------

    def _launch(self, plan: TrainingPlan, resume: bool) -> None:
        self.unlaunched = None
        self.plan_key = None  # a launched plan is used up: the same name again means Resume
        self.record = None
        self.events = []
        if not resume:
            self.losses, self.eval_losses = [], []
        self.query_one("#train-result", Static).update("")
        progress = self.query_one("#train-progress", ProgressBar)
        progress.update(total=plan.steps, progress=0)
        self._draw_plot()
        self._log(f"{'resuming' if resume else 'starting'} {plan.config.name}: {plan.steps} steps")
        self._show_status("Starting the training process (loading torch and the base model)…")
        try:
            self.run = launch_training(plan, resume=resume, threads=plan.config.threads)
        except OSError as error:
            self._show_error(f"The training process could not start: {error}")
            return
        self._update_buttons()
        self._follow(self.run)

    @work(thread=True, exclusive=True, group="train-run", exit_on_error=False, description="following a training run")
    def _follow(self, run: TrainingRun) -> None:
        for event in run.events():
            self.app.call_from_thread(self._on_event, event)
        record = None
        if run.error is None and not run.interrupted:
            record = finish_training(self.store, run.plan)
        self.app.call_from_thread(self._finished, run, record)

    def _on_event(self, event: TrainingEvent) -> None:
        self.events.append(event)
        fields = event.model_dump()
        kind = event.event
        if kind == "start":
            total = fields.get("total_steps")
            if total:
                self.query_one("#train-progress", ProgressBar).update(total=total)
            self._log(
                f"started on {fields.get('device', '?')}: {fields.get('train_examples')} examples, "
                f"{fields.get('train_tokens')} tokens, {total} steps"
            )
            self._show_status("Training…")
        elif kind == "step":
            self.query_one("#train-progress", ProgressBar).update(progress=fields.get("step", 0))
            self._show_progress(fields)
        elif kind == "loss":
            self.losses.append((fields.get("step", len(self.losses)), float(fields["loss"])))
            self._draw_plot()
            self._log(f"step {fields.get('step')}: loss {fields['loss']:.4f}")
        elif kind == "eval":
            point = (fields.get("step", 0), float(fields["eval_loss"]))
            if self.eval_losses and self.eval_losses[-1] == point:
                return  # the final evaluation, reported again at the end of the last epoch
            self.eval_losses.append(point)
            self._draw_plot()
            self._log(f"eval after epoch {fields.get('epoch', 0):.2f}: held-out loss {fields['eval_loss']:.4f}")
        elif kind == "checkpoint":
            self._log(f"checkpoint at step {fields.get('step')}")
        elif kind == "interrupted":
            self._log(f"stopped at step {fields.get('step')}; the checkpoint is saved")
        elif kind == "error":
            self._log(f"error: {fields.get('message')}")
        elif kind == "done":
            self._log("training done; converting and registering the adapter…")
            self._show_status("Converting and registering the adapter…")

    def _show_progress(self, fields: dict) -> None:
        line = Text()
        line.append(f"step {fields.get('step')}/{fields.get('total_steps')}", style="bold")
        line.append(f" · {fields.get('tokens_per_s', 0):.0f} tokens/s · ETA {clock(fields.get('eta_s'))}")
        if self.losses:
            line.append(f" · loss {self.losses[-1][1]:.3f}")
        if self.eval_losses:
            line.append(f" · eval {self.eval_losses[-1][1]:.3f}")
        self.query_one("#train-status", Static).update(line)

    def _finished(self, run: TrainingRun, record: AdapterRecord | None) -> None:
        self.run = None
        self._update_buttons()
        if run.error:
            self._show_error(f"Training failed: {run.error}\nThe log is in {run.log_path}.")
        elif run.interrupted:
            self._show_status(f"Stopped with a checkpoint. ^n resumes {run.plan.config.name} from it.")
        elif record is not None:
            self.record = record
            self.query_one("#train-progress", ProgressBar).update(progress=run.plan.steps)
            self.query_one("#train-result", Static).update(result_text(record))
            self._log(f"registered {record.reference}")
            self._show_status(f"Done: adapter {record.reference} is registered.")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        if event.worker.group == "train-run":
            run, self.run = self.run, None
            if run is not None:
                run.cancel()
            self._update_buttons()
            self._show_error(f"The run could not be finished: {error}")
        elif event.worker.group == "train-plan":
            self._show_error(f"Cannot plan: {error}\n(^n resumes an unfinished run of that name.)")

    # -- drawing --------------------------------------------------------------------------

    def _draw_plot(self) -> None:
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("loss")
        plt.xlabel("step")
        if self.losses:
            plt.plot([s for s, _ in self.losses], [v for _, v in self.losses], label="train", marker="braille", color="cyan")
        if self.eval_losses:
            plt.plot(
                [s for s, _ in self.eval_losses],
                [v for _, v in self.eval_losses],
                label="eval (held out)",
                marker="braille",
                color="orange",
            )
        plot.refresh()

    def _log(self, line: str) -> None:
        self.query_one("#train-log", RichLog).write(line)

    def _show_status(self, message: str) -> None:
        status = self.query_one("#train-status", Static)
        status.set_class(False, "error")
        status.update(message)

    def _show_error(self, message: str) -> None:
        status = self.query_one("#train-status", Static)
        status.set_class(True, "error")
        status.update(message)
        self._log(message)
        self.notify(message, title="Training", severity="error", timeout=10)

    def _update_buttons(self) -> None:
        running = self.running
        self.query_one("#train-start", Button).disabled = running
        self.query_one("#train-plan-button", Button).disabled = running
        self.query_one("#train-resume", Button).disabled = running
        self.query_one("#train-cancel", Button).disabled = not running
