"""The top line of every main screen: the F-keys and what they open, the current one
highlighted, then the screen's own subtitle as far as it fits. It replaces Textual's Header,
so that the F-keys stay in sight at 80 columns where the footer is full of the screen's keys."""

from __future__ import annotations

from rich.text import Text
from textual.events import Resize
from textual.widgets import Static

SCREENS = (  # key, mode (None: help), long label, short label
    ("F1", None, "Help", "Help"),
    ("F2", "library", "Library", "Lib"),
    ("F3", "inspector", "Inspector", "Insp"),
    ("F4", "settings", "Settings", "Set"),
    ("F5", "generate", "Generate", "Gen"),
    ("F6", "curation", "Curation", "Cur"),
    ("F7", "train", "Train", "Train"),
)
LONG_FROM = 100  # columns from which the long labels fit beside a subtitle


def fkey_line(current: str | None, width: int, subtitle: str = "") -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    for key, mode, long, short in SCREENS:
        label = long if width >= LONG_FROM else short
        here = mode is not None and mode == current
        text.append(f" {key}", style="bold reverse" if here else "bold")
        text.append(f" {label} ", style="reverse" if here else "")
    if subtitle:
        text.append("│ ", style="dim")
        text.append(subtitle, style="dim")
    text.truncate(width, overflow="ellipsis")
    return text


class FKeyBar(Static):
    DEFAULT_CSS = """
    FKeyBar {
        height: 1;
        background: $boost;
        color: $text;
    }
    """

    def on_mount(self) -> None:
        self._draw()

    def on_resize(self, event: Resize) -> None:
        self._draw()

    def _draw(self) -> None:
        app = self.app
        mode = app.current_mode
        subtitle = getattr(self.screen, "SUB_TITLE", "") or ""
        self.update(fkey_line(mode, self.size.width or app.size.width, subtitle))
