"""The help screen: every screen and its keys, built from the bindings themselves."""

from __future__ import annotations

from rich.console import Group
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
    "OpenAI-compatible server). In a text box, Esc leaves the box so that single-letter keys work.\n"
)


KEY_NAMES = {"slash": "/", "question_mark": "?", "escape": "Esc", "enter": "Enter", "space": "Space"}


def key_label(binding: Binding) -> str:
    if binding.key_display:
        return binding.key_display
    keys = (KEY_NAMES.get(key, key).replace("ctrl+", "^") for key in binding.key.split(","))
    return " / ".join(keys)


def bindings_table(sections: list[tuple[str, list]]) -> Group:
    """Each screen's title, then its keys: the key column as wide as the keys, not the titles."""
    parts: list = []
    for title, bindings in sections:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column("key", style="bold cyan", no_wrap=True, min_width=8)
        table.add_column("what it does")
        for binding in bindings:
            if isinstance(binding, tuple):
                binding = Binding(*binding)
            if binding.description:
                table.add_row(key_label(binding), binding.description)
        parts.extend([Text(title, style="bold underline"), table, Text("")])
    return Group(*parts)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,f1,question_mark,q", "dismiss", "Close help"),
        Binding("j", "scroll(1)", "Scroll down", show=False),
        Binding("k", "scroll(-1)", "Scroll up", show=False),
    ]

    def __init__(self, sections: list[tuple[str, list]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(Text(INTRO), id="help-intro")
            yield Static(bindings_table(self.sections), id="help-keys")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        box = self.query_one("#help-box", VerticalScroll)
        box.border_subtitle = "↑↓ j k PgUp PgDn scroll · Esc closes"
        box.focus()

    def action_scroll(self, lines: int) -> None:
        box = self.query_one("#help-box", VerticalScroll)
        box.scroll_relative(y=lines, animate=False)
