"""The help screen: every screen and its keys, built from the bindings themselves."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

INTRO = (
    "sotopia-pi: two language-model agents play a social scenario; a judge scores them on "
    "SOTOPIA-EVAL's seven dimensions. The embedded model (SmolLM2-135M) runs offline with no "
    "setup but plays and judges poorly; add a stronger model in Settings (a GGUF file or an "
    "OpenAI-compatible server). In a text box, Esc leaves the box so that single-letter keys work."
)


KEY_NAMES = {"slash": "/", "question_mark": "?", "escape": "Esc", "enter": "Enter", "space": "Space"}


def key_label(binding: Binding) -> str:
    keys = (KEY_NAMES.get(key, key).replace("ctrl+", "^") for key in binding.key.split(","))
    return " / ".join(keys)


def bindings_table(sections: list[tuple[str, list]]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("key", style="bold cyan", no_wrap=True)
    table.add_column("what it does")
    for title, bindings in sections:
        table.add_row(Text(title, style="bold underline"), "")
        for binding in bindings:
            if isinstance(binding, tuple):
                binding = Binding(*binding)
            if binding.description:
                table.add_row(key_label(binding), binding.description)
        table.add_row("", "")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,question_mark,q", "dismiss", "Close help")]

    def __init__(self, sections: list[tuple[str, list]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(Text(INTRO), id="help-intro")
            yield Static(bindings_table(self.sections), id="help-keys")
        yield Footer(compact=True)
