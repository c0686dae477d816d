"""Write a new scenario or edit one, checked as you type; save it to the store or export it
as a library file.

A library scenario is reinstalled from its file whenever the library changes, so editing one
saves a copy under a new id and codename; scenarios written here or generated are edited in
place. The screen is dismissed with the saved scenario's id, or None.
"""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, Footer, Static

from sotopia_pi import paths
from sotopia_pi.library import (
    LIBRARY_SOURCE,
    FieldError,
    RecordError,
    save_authored_scenario,
    scenario_from_dict,
    scenario_to_dict,
    write_scenario_file,
)
from sotopia_pi.profiles import Scenario
from sotopia_pi.store import Store

from ..errors import describe
from ..widgets.fkeys import FKeyBar
from ..widgets.scenario_form import ScenarioForm
from .confirm import ConfirmScreen
from .prompt import PromptField, PromptScreen


def default_export_dir() -> Path:
    return paths.home() / "library-export"


def free_codename(codename: str, taken: set[str]) -> str:
    """`codename`, or `codename_2`, `codename_3`... whichever no other scenario uses."""
    candidate, number = codename, 2
    while candidate in taken:
        candidate, number = f"{codename}_{number}", number + 1
    return candidate


class ScenarioEditorScreen(Screen[str | None]):
    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+l", "export", "Export to a library file"),
        Binding("escape", "close", "Close"),
    ]

    def __init__(self, store: Store, scenario: Scenario | None = None) -> None:
        super().__init__()
        self.store = store
        self.original = scenario
        self.is_copy = scenario is not None and scenario.source == LIBRARY_SOURCE
        edited_in_place = scenario.id if scenario is not None and not self.is_copy else None
        self.taken_codenames = {s.codename for s in store.scenarios() if s.codename and s.id != edited_in_place}
        self._saved_data: dict | None = None

    @property
    def heading(self) -> str:
        if self.original is None:
            return "New scenario"
        name = self.original.codename or self.original.id
        if self.is_copy:
            return f"A copy of the library scenario {name} (the library's own file is left as it is)"
        return f"Editing {name} ({self.original.id})"

    def compose(self) -> ComposeResult:
        yield FKeyBar()
        yield Static(self.heading, id="editor-heading", classes="section")
        yield ScenarioForm(
            {c.id: c for c in self.store.characters()},
            self.store.relationships(),
            extra_check=self.codename_is_free,
            id="scenario-form",
        )
        with Horizontal(id="editor-buttons"):
            yield Button("Save  ^s", id="editor-save", variant="success")
            yield Button("Export  ^l", id="editor-export")
            yield Button("Close  esc", id="editor-close")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = self.heading
        form = self.query_one(ScenarioForm)
        if self.original is not None:
            data = scenario_to_dict(self.original)
            if self.is_copy:
                data["codename"] = free_codename(self.original.codename or "scenario", self.taken_codenames)
            form.load(data)
        self._saved_data = form.data()[0]
        form.query_one("#form-codename").focus()

    def codename_is_free(self, scenario: Scenario) -> list[FieldError]:
        if scenario.codename in self.taken_codenames:
            return [FieldError(field="codename", message=f"{scenario.codename!r} is taken by another scenario")]
        return []

    @property
    def form(self) -> ScenarioForm:
        return self.query_one(ScenarioForm)

    @property
    def dirty(self) -> bool:
        return self.form.data()[0] != self._saved_data

    @on(ScenarioForm.Checked)
    def _checked(self, event: ScenarioForm.Checked) -> None:
        self.query_one("#editor-save", Button).disabled = bool(event.errors)
        self.query_one("#editor-export", Button).disabled = bool(event.errors)

    # -- actions --------------------------------------------------------------------------

    @on(Button.Pressed, "#editor-save")
    def action_save(self) -> None:
        if not self.form.ready("saved"):
            return
        data = self.form.data()[0]
        if self.original is not None and not self.is_copy:
            data.update(id=self.original.id, source=self.original.source)
        try:
            scenario, pairings = save_authored_scenario(self.store, data)
        except RecordError as error:  # the store changed under the form (a character removed)
            self.notify(describe(error), title="Not saved", severity="error", timeout=10)
            return
        self.notify(f"Saved {scenario.codename} with {len(pairings)} pairing(s).", title="Scenario saved")
        self.dismiss(scenario.id)

    @on(Button.Pressed, "#editor-export")
    def action_export(self) -> None:
        if not self.form.ready("exported"):
            return
        field = PromptField("folder", "Library folder to write scenarios/<codename>.toml into", value=str(default_export_dir()))
        self.app.push_screen(
            PromptScreen("Export to a library file", [field], accept=self._export_to),
        )

    def _export_to(self, answer: dict[str, str]) -> str | None:
        """Write the file; an error message keeps the prompt open."""
        folder = answer["folder"].strip()
        if not folder:
            return "Give a folder."
        scenario = scenario_from_dict(self.form.data()[0])
        try:
            path = write_scenario_file(scenario, Path(folder).expanduser(), overwrite=True)
        except (OSError, RecordError) as error:
            return f"Could not write it: {error}"
        self.notify(f"Wrote {path}", title="Exported")
        return None

    @on(Button.Pressed, "#editor-close")
    def action_close(self) -> None:
        if not self.dirty:
            self.dismiss(None)
            return

        def answered(discard: bool | None) -> None:
            if discard:
                self.dismiss(None)

        self.app.push_screen(ConfirmScreen("Close without saving your changes?", yes="Discard them", no="Keep editing"), answered)
