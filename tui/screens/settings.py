"""Settings: model presets, default models, the judge, live evaluation, max turns.

Saved to the config file (sotopia_pi.config); SOTOPIA_PI_* environment variables still win,
and the form says which fields they override.
"""

from __future__ import annotations

from pydantic import ValidationError
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, OptionList, Select, Static, Switch
from textual.widgets.option_list import Option

from sotopia_pi import config
from sotopia_pi.config import ModelPreset, Settings

from ..widgets.fkeys import FKeyBar

PRESET_KINDS = [
    ("embedded (SmolLM2-135M in the package)", "embedded"),
    ("GGUF file", "gguf"),
    ("OpenAI-compatible server", "openai"),
]
KIND_PLACEHOLDERS = {
    "embedded": "(nothing to fill in)",
    "gguf": "/path/to/model.gguf",
    "openai": "MODEL@http://127.0.0.1:8000/v1",
}
FIELDS = ("agent1_model", "agent2_model", "judge_model", "max_turns", "live_eval")


def preset_model(kind: str, target: str) -> str:
    return "embedded" if kind == "embedded" else f"{kind}:{target.strip()}"


def first_error(error: ValidationError) -> str:
    item = error.errors()[0]
    return str(item["msg"]).removeprefix("Value error, ")


class SettingsScreen(Screen):
    SUB_TITLE = "Settings"
    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+d", "delete_preset", "Delete preset"),
    ]

    def compose(self) -> ComposeResult:
        yield FKeyBar()
        with VerticalScroll(id="settings"):
            yield Static(id="settings-intro")
            yield Label("Defaults for new episodes", classes="section")
            for field, label in (
                ("agent1_model", "Side 1 model"),
                ("agent2_model", "Side 2 model"),
                ("judge_model", "Judge model"),
            ):
                with Horizontal(classes="form-row"):
                    yield Label(label, classes="form-label")
                    yield Input(id=f"setting-{field}", placeholder="embedded, gguf:PATH, openai:MODEL@URL, human")
            with Horizontal(classes="form-row"):
                yield Label("Max turns", classes="form-label")
                yield Input(id="setting-max_turns", type="integer")
            with Horizontal(classes="form-row"):
                yield Label("Live scoring", classes="form-label")
                yield Switch(id="setting-live_eval")
            yield Static(id="settings-error")
            yield Label("Model presets (offered in the library's model choosers)", classes="section")
            yield OptionList(id="preset-list")
            with Horizontal(classes="form-row"):
                yield Select(PRESET_KINDS, value="gguf", allow_blank=False, id="preset-kind")
                yield Input(placeholder="name", id="preset-name")
                yield Input(placeholder=KIND_PLACEHOLDERS["gguf"], id="preset-target")
                yield Button("Add preset", id="preset-add")
            with Horizontal(classes="form-row"):
                yield Button("Save  ^s", id="save", variant="primary")
        yield Footer(compact=True)

    @property
    def settings(self) -> Settings:
        return self.app.settings  # type: ignore[attr-defined]

    def on_mount(self) -> None:
        self.presets = list(self.settings.presets)
        self.fill_form(self.settings)

    def fill_form(self, settings: Settings) -> None:
        overrides = config.env_overrides()
        for field in ("agent1_model", "agent2_model", "judge_model", "max_turns"):
            box = self.query_one(f"#setting-{field}", Input)
            box.value = str(getattr(settings, field))
            box.tooltip = f"set by {overrides[field]}" if field in overrides else None
        self.query_one("#setting-live_eval", Switch).value = settings.live_eval
        intro = Text()
        intro.append(f"Config file: {config.config_path()}\n", style="dim")
        intro.append("An empty judge model runs episodes without scores. ", style="dim")
        intro.append(
            "The embedded model is weak; for better play and judging add a GGUF file or an "
            "OpenAI-compatible server below, or download one with `sotopia-pi models pull NAME` "
            "(pulled models appear in the library's choosers).",
            style="dim",
        )
        if overrides:
            names = ", ".join(f"{field} ({variable})" for field, variable in overrides.items())
            intro.append(f"\nSet by environment variables, which win over this file: {names}", style="yellow")
        self.query_one("#settings-intro", Static).update(intro)
        self.fill_presets()

    def fill_presets(self) -> None:
        presets = self.query_one("#preset-list", OptionList)
        presets.clear_options()
        presets.add_options(
            Option(Text.assemble((p.name, "bold"), (f"  {p.model}", "dim")), id=str(i))
            for i, p in enumerate(self.presets)
        )

    def form_settings(self) -> Settings | None:
        """A copy of the settings with the form's values, or None after showing what is wrong."""
        error_box = self.query_one("#settings-error", Static)
        updated = self.settings.model_copy(deep=True)
        values = {
            field: self.query_one(f"#setting-{field}", Input).value.strip()
            for field in ("agent1_model", "agent2_model", "judge_model", "max_turns")
        }
        values["live_eval"] = self.query_one("#setting-live_eval", Switch).value  # type: ignore[assignment]
        for field, value in values.items():
            try:
                setattr(updated, field, value)
            except ValidationError as error:
                error_box.update(Text(f"{field}: {first_error(error)}", style="bold red"))
                self.query_one(f"#setting-{field}").focus()
                return None
        updated.presets = list(self.presets)
        error_box.update("")
        return updated

    @on(Select.Changed, "#preset-kind")
    def _kind_changed(self, event: Select.Changed) -> None:
        target = self.query_one("#preset-target", Input)
        target.placeholder = KIND_PLACEHOLDERS.get(str(event.value), "")
        target.disabled = event.value == "embedded"

    @on(Button.Pressed, "#preset-add")
    @on(Input.Submitted, "#preset-target")
    def action_add_preset(self) -> None:
        kind = str(self.query_one("#preset-kind", Select).value)
        name = self.query_one("#preset-name", Input).value.strip()
        target = self.query_one("#preset-target", Input).value
        error_box = self.query_one("#settings-error", Static)
        try:
            preset = ModelPreset(name=name or preset_model(kind, target), model=preset_model(kind, target))
        except ValidationError as error:
            error_box.update(Text(f"preset: {first_error(error)}", style="bold red"))
            return
        error_box.update(Text(f"Added {preset.name}; press ^s to save.", style="green"))
        self.presets.append(preset)
        self.fill_presets()
        self.query_one("#preset-name", Input).value = ""
        self.query_one("#preset-target", Input).value = ""

    def action_delete_preset(self) -> None:
        presets = self.query_one("#preset-list", OptionList)
        if presets.highlighted is None or not self.presets:
            self.notify("Highlight a preset in the list first.")
            return
        removed = self.presets.pop(presets.highlighted)
        self.fill_presets()
        self.notify(f"Removed {removed.name}; press ^s to save.")

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        updated = self.form_settings()
        if updated is None:
            return
        try:
            path = config.save(updated)
        except OSError as error:
            self.notify(f"Cannot write the config file: {error}", severity="error", timeout=10)
            return
        self.app.apply_settings(updated)  # type: ignore[attr-defined]
        self.notify(f"Saved to {path}")
