"""A small modal form: a few text fields, a check that can refuse the answer, Enter / Esc."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, Static


@dataclass(frozen=True)
class PromptField:
    name: str
    label: str
    placeholder: str = ""
    value: str = ""


Answer = dict[str, str]


class PromptScreen(ModalScreen[Answer | None]):
    """Returns the fields' values, or None when cancelled. On Enter, `accept` gets the values
    and returns an error message to show (the form stays open) or None to close."""

    DEFAULT_CSS = """
    PromptScreen {
        align: center middle;
    }
    #prompt-box {
        width: 80;
        height: auto;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    #prompt-box Label {
        margin-top: 1;
    }
    #prompt-title {
        text-style: bold;
        color: $accent;
    }
    #prompt-error {
        height: auto;
        color: $error;
        text-style: bold;
    }
    #prompt-hint {
        color: $text-muted;
    }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        title: str,
        fields: Sequence[PromptField],
        *,
        explanation: str = "",
        accept: Callable[[Answer], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.fields = list(fields)
        self.explanation = explanation
        self.accept = accept

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box"):
            yield Static(self.title_text, id="prompt-title")
            if self.explanation:
                yield Static(Text(self.explanation, style="dim"), id="prompt-explanation")
            for field in self.fields:
                yield Label(field.label)
                yield Input(
                    value=field.value, placeholder=field.placeholder, id=f"prompt-{field.name}", select_on_focus=False
                )
            yield Static("", id="prompt-error")
            yield Static("Enter accepts · Esc cancels", id="prompt-hint")
        yield Footer(compact=True)

    def values(self) -> Answer:
        return {field.name: self.query_one(f"#prompt-{field.name}", Input).value for field in self.fields}

    def show_error(self, message: str) -> None:
        self.query_one("#prompt-error", Static).update(message)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        values = self.values()
        error = self.accept(values) if self.accept is not None else None
        if error:
            self.show_error(error)
            return
        self.dismiss(values)

    @on(Input.Changed)
    def _changed(self) -> None:
        self.show_error("")

    def action_cancel(self) -> None:
        self.dismiss(None)
