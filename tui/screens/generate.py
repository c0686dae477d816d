"""Generate a scenario the SOTOPIA-pi way, look at it, edit it, then save or discard it.

Pick an unused seed prompt and a model; the model's answers are checked by the engine
(`propose_scenario`) in a worker thread while every attempt is logged here. The first answer
that passes fills the form, where it can be edited and is checked again as you type. Saving
stores it with its pairings and marks the seed used (`save_proposal`); discarding stores
nothing and leaves the seed free.
"""

from __future__ import annotations

import random
import threading

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, OptionList, RichLog, Select, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from sotopia_pi.backends import BackendError, Cancelled, ChatBackend
from sotopia_pi.library import FieldError, LibraryError, RecordError, load_library
from sotopia_pi.library.generate import (
    GenerationError,
    Proposal,
    SeedUsed,
    find_duplicate,
    propose_scenario,
    save_proposal,
    unused_seeds,
)
from sotopia_pi.profiles import Scenario

from ..errors import describe
from ..widgets.fkeys import FKeyBar
from ..widgets.scenario_form import ScenarioForm
from .library import preset_model_choices


class GenerateScreen(Screen):
    SUB_TITLE = "Generate — a new scenario from an unused seed prompt"
    BINDINGS = [
        Binding("ctrl+g", "generate", "Generate"),
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+b", "discard", "Discard"),
        Binding("ctrl+r", "random_seed", "Random seed"),
        Binding("escape", "stop", "Stop generating", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.seeds: list[str] = []
        self.proposal: Proposal | None = None
        self._backend: ChatBackend | None = None
        self._backend_model = ""
        self._other_scenarios: list[Scenario] = []  # what the preview shown must not repeat
        self._cancel = threading.Event()
        self._generating = False

    @property
    def store(self):
        return self.app.store  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield FKeyBar()
        with Horizontal(id="generate"):
            with Vertical(id="generate-left"):
                yield Input(placeholder="search the unused seed prompts", id="seed-search")
                yield OptionList(id="seed-list")
                yield Label("Model that writes the scenario", classes="section")
                yield Select(self.model_options(), value=self.app.settings.generation_model, id="generate-model", allow_blank=False)  # type: ignore[attr-defined]
                with Horizontal(classes="form-row"):
                    yield Button("Generate  ^g", id="generate-run", variant="primary")
                    yield Button("Random seed  ^r", id="generate-random")
                yield Label("Attempts", classes="section")
                yield RichLog(id="generate-log", wrap=True, markup=False, max_lines=500, min_width=20)
            with Vertical(id="generate-right"):
                yield Static("Pick a seed prompt and press Generate.", id="generate-origin")
                yield ScenarioForm(
                    {c.id: c for c in self.store.characters()},
                    self.store.relationships(),
                    extra_check=self.not_a_duplicate,
                    id="generate-form",
                )
                with Horizontal(id="generate-buttons"):
                    yield Button("Save  ^s", id="generate-save", variant="success", disabled=True)
                    yield Button("Discard  ^b", id="generate-discard", variant="error", disabled=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#generate-form").display = False
        self.reload_seeds()

    def on_unmount(self) -> None:
        self._cancel.set()
        if self._backend is not None and not self._generating:
            self._backend.close()

    def model_options(self) -> list[tuple[str, str]]:
        settings = self.app.settings  # type: ignore[attr-defined]
        options = preset_model_choices(settings)
        for model in (settings.judge_model, *settings.agent_models):
            if model and model != "human" and model not in {m for _, m in options}:
                options.append((f"{model} (from settings)", model))
        return options

    # -- seeds ----------------------------------------------------------------------------

    def reload_seeds(self) -> None:
        try:
            self.seeds = unused_seeds(self.store, load_library())
        except LibraryError as error:
            self.seeds = []
            self.notify(describe(error), title="The seed prompts could not be read", severity="error", timeout=15)
        self.fill_seeds()

    def fill_seeds(self) -> None:
        needle = self.query_one("#seed-search", Input).value.strip().lower()
        shown = [Option(seed, id=str(index)) for index, seed in enumerate(self.seeds) if needle in seed.lower()]
        seed_list = self.query_one("#seed-list", OptionList)
        seed_list.clear_options()
        seed_list.add_options(shown)
        if shown:
            seed_list.highlighted = 0
        seed_list.border_title = f"Unused seed prompts: {len(self.seeds)}"

    @on(Input.Changed, "#seed-search")
    def _search(self) -> None:
        self.fill_seeds()

    @property
    def chosen_seed(self) -> str | None:
        option = self.query_one("#seed-list", OptionList).highlighted_option
        return self.seeds[int(option.id)] if option is not None and option.id is not None else None

    @on(Button.Pressed, "#generate-random")
    def action_random_seed(self) -> None:
        self.query_one("#seed-search", Input).value = ""
        self.fill_seeds()
        if self.seeds:
            seed_list = self.query_one("#seed-list", OptionList)
            seed_list.highlighted = random.randrange(len(self.seeds))
            seed_list.focus()

    @on(OptionList.OptionSelected, "#seed-list")
    def _seed_chosen(self) -> None:
        self.action_generate()

    # -- generating -----------------------------------------------------------------------

    @on(Button.Pressed, "#generate-run")
    def action_generate(self) -> None:
        if self._generating:
            self.notify("Already generating; Esc stops it.")
            return
        seed = self.chosen_seed
        if seed is None:
            self.notify("Pick a seed prompt first.", severity="warning")
            return
        if self.proposal is not None and self.proposal.scenario is not None:
            self.notify("Save or discard the scenario shown first.", severity="warning")
            return
        model = str(self.query_one("#generate-model", Select).value)
        self._generating = True
        self._cancel = threading.Event()
        self.query_one("#generate-run", Button).disabled = True
        self.log_line(f"seed: {seed}\nmodel: {model}")
        self.query_one("#generate-origin", Static).update(Text(f"Generating from: {seed}", style="italic"))
        self.propose(seed, model, self._cancel)

    @work(thread=True, exclusive=True, group="generate")
    def propose(self, seed: str, model: str, cancel: threading.Event) -> None:
        say = lambda message: self.app.call_from_thread(self.log_line, message)  # noqa: E731
        proposal: Proposal | None = None
        problem = ""
        try:
            backend = self._backend_for(model)
            say(f"asking {backend.name}...")
            proposal = propose_scenario(self.store, backend, seed, on_progress=say, cancel=cancel)
        except Cancelled:
            problem = "stopped"
        except (BackendError, GenerationError) as error:
            problem = str(error)
        except Exception as error:  # a bug must not leave the screen stuck in "generating"
            problem = f"{type(error).__name__}: {error}"
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.show_proposal, proposal, problem)

    def _backend_for(self, model: str) -> ChatBackend:
        """The backend for `model`, loaded once and kept while the same model is chosen."""
        if self._backend is not None and self._backend_model == model:
            return self._backend
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        self._backend = self.app.backend_factory(model)  # type: ignore[attr-defined]
        self._backend_model = model
        return self._backend

    def show_proposal(self, proposal: Proposal | None, problem: str) -> None:
        self._generating = False
        self.query_one("#generate-run", Button).disabled = False
        origin = self.query_one("#generate-origin", Static)
        if proposal is None or proposal.scenario is None:
            reason = problem or f"none of the {len(proposal.attempts) if proposal else 0} answers passed the checks"
            self.log_line(f"no scenario: {reason}. The seed stays unused.")
            origin.update(Text(f"No scenario: {reason}. Generate again, or pick another seed.", style="red"))
            self.notify(f"No scenario: {reason}", severity="warning")
            return
        self.proposal = proposal
        self._other_scenarios = [s for s in self.store.scenarios() if s.id != proposal.scenario.id]
        origin.update(
            Text.assemble(
                ("Preview — edit it, then save or discard\n", "bold"),
                ("seed: ", "bold"), proposal.seed, "\n",
                ("model: ", "bold"), f"{proposal.model} · answer {len(proposal.attempts)} · example {proposal.example_id}",
            )
        )
        form = self.query_one(ScenarioForm)
        form.display = True
        form.load(proposal.scenario)
        self.query_one("#generate-discard", Button).disabled = False
        form.scroll_home(animate=False)

    def log_line(self, message: str) -> None:
        self.query_one("#generate-log", RichLog).write(message)

    def action_stop(self) -> None:
        if self._generating:
            self._cancel.set()
            self.log_line("stopping...")

    # -- the preview ----------------------------------------------------------------------

    def not_a_duplicate(self, scenario: Scenario) -> list[FieldError]:
        duplicate = find_duplicate(scenario, self._other_scenarios)
        return [FieldError(field=None, message=f"duplicate: {duplicate}")] if duplicate else []

    @on(ScenarioForm.Checked)
    def _checked(self, event: ScenarioForm.Checked) -> None:
        self.query_one("#generate-save", Button).disabled = bool(event.errors) or self.proposal is None

    @on(Button.Pressed, "#generate-save")
    def action_save(self) -> None:
        if self.proposal is None:
            self.notify("Nothing to save yet: generate a scenario first.", severity="warning")
            return
        form = self.query_one(ScenarioForm)
        if not form.ready("saved"):
            return
        try:
            generated = save_proposal(self.store, self.proposal, form.data()[0])
        except (RecordError, SeedUsed, GenerationError) as error:
            self.notify(describe(error), title="Not saved", severity="error", timeout=10)
            return
        scenario = generated.scenario
        self.log_line(f"saved {scenario.codename} with {len(generated.pairings)} pairing(s)")
        self.notify(
            f"Saved {scenario.codename} with {len(generated.pairings)} pairing(s); it is in the library (F2).",
            title="Scenario saved",
        )
        self.clear_preview(f"Saved {scenario.codename}. Pick another seed prompt.")
        self.reload_seeds()

    @on(Button.Pressed, "#generate-discard")
    def action_discard(self) -> None:
        if self.proposal is None:
            return
        self.log_line("discarded; the seed stays unused")
        self.clear_preview("Discarded; nothing was stored and the seed stays unused.")

    def clear_preview(self, message: str) -> None:
        self.proposal = None
        form = self.query_one(ScenarioForm)
        form.load(None)
        form.display = False
        self.query_one("#generate-origin", Static).update(message)
        self.query_one("#generate-save", Button).disabled = True
        self.query_one("#generate-discard", Button).disabled = True
        self.query_one("#seed-list", OptionList).focus()
