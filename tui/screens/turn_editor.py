"""Edit what an agent said at one turn of a finished episode, for training.

The original argument is never overwritten: it stays on screen and in the store, the edit is
marked in the turn list, and ^r brings the original back (the history keeps both).
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from sotopia_pi.dataset.annotations import edit_turn, is_editable, revert_turn, turn_edits
from sotopia_pi.dataset.errors import CurationError
from sotopia_pi.episode import Turn
from sotopia_pi.store import NotFound, Store

from ..errors import describe
from ..widgets.fkeys import FKeyBar
from ..widgets.transcript import ACTION_LABELS

EDIT_MARK = "✎"
LABEL_TEXT = 22  # characters of the turn's text in the list, so that a label fits on one line


def character_names(store: Store, agent_ids: list[str]) -> tuple[str, str]:
    names = []
    for character_id in agent_ids:
        try:
            names.append(store.character(character_id).name)
        except NotFound:
            names.append(character_id)
    return names[0], names[1]


def current_text(turn: Turn) -> str:
    return turn.edited_argument if turn.edited_argument is not None else turn.argument


def edit_label(turn: Turn, names: tuple[str, str]) -> Text:
    shown = " ".join(current_text(turn).split())
    if len(shown) > LABEL_TEXT:
        shown = shown[: LABEL_TEXT - 1] + "…"
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{EDIT_MARK} " if turn.edited_argument is not None else "  ", style="bold yellow")
    text.append(f"#{turn.index} ", style="dim")
    text.append(names[turn.agent].split()[0], style="bold")
    text.append(f" [{ACTION_LABELS[turn.action_type]}] ", style="italic")
    text.append(shown)
    return text


class TurnEditorScreen(Screen[bool]):
    """Returns whether anything was saved or undone."""

    SUB_TITLE = "Curation — edit turns"
    DEFAULT_CSS = """
    #editor-header {
        height: auto;
        padding: 0 1;
        background: $boost;
    }
    #editor-body {
        height: 1fr;
    }
    #edit-turn-list {
        width: 50;
        height: 1fr;
    }
    #edit-detail {
        width: 1fr;
        padding: 0 1;
    }
    #edit-original {
        height: auto;
        padding: 0 1;
        border-left: thick $secondary;
    }
    #edit-text {
        height: 10;
    }
    #edit-status {
        height: auto;
    }
    """
    BINDINGS = [
        Binding("escape", "close", "Back"),
        Binding("ctrl+s", "save", "Save edit", priority=True),
        Binding("ctrl+r", "restore", "Undo edit (restore original)", priority=True),
    ]

    def __init__(self, store: Store, episode_id: str, side: int | None = None) -> None:
        super().__init__()
        self.store = store
        self.episode = store.episode(episode_id)
        self.names = character_names(store, self.episode.agent_ids)
        self.turns = store.turns(self.episode.id)
        self.start_side = side
        self.changed = False
        self.warned_unsaved = False

    def compose(self) -> ComposeResult:
        yield FKeyBar()
        yield Static(self.header_text(), id="editor-header")
        with Horizontal(id="editor-body"):
            yield OptionList(
                *[Option(edit_label(t, self.names), id=str(t.index)) for t in self.turns], id="edit-turn-list"
            )
            with VerticalScroll(id="edit-detail"):
                yield Label("Original (always kept)", classes="section")
                yield Static(id="edit-original")
                yield Label("Text used for training", classes="section")
                yield TextArea(id="edit-text", soft_wrap=True)
                yield Static(id="edit-status")
        yield Footer(compact=True)

    def header_text(self) -> Text:
        text = Text()
        text.append(f"{self.episode.scenario_id}  ", style="bold")
        text.append(f"{self.names[0]} (side 1) vs {self.names[1]} (side 2) · episode {self.episode.id}\n")
        text.append(
            "An edit changes only what training reads; the original stays stored and shown. "
            f"Edited turns are marked {EDIT_MARK}. ^s saves, ^r restores the original.",
            style="dim",
        )
        return text

    def on_mount(self) -> None:
        turn_list = self.query_one("#edit-turn-list", OptionList)
        if not self.turns:
            self.query_one("#edit-status", Static).update("No turns were played.")
            self.query_one(TextArea).disabled = True
            return
        first = next((t.index for t in self.turns if t.agent == self.start_side and is_editable(t)), 0)
        turn_list.highlighted = first
        turn_list.focus()

    @property
    def current(self) -> Turn | None:
        index = self.query_one("#edit-turn-list", OptionList).highlighted
        return self.turns[index] if index is not None and self.turns else None

    @on(OptionList.OptionHighlighted, "#edit-turn-list")
    def _highlighted(self) -> None:
        self.warned_unsaved = False
        self.show_turn()

    @on(OptionList.OptionSelected, "#edit-turn-list")
    def _selected(self) -> None:
        editor = self.query_one(TextArea)
        if not editor.disabled:
            editor.focus()

    def show_turn(self, message: Text | str = "") -> None:
        turn = self.current
        if turn is None:
            return
        original = Text()
        original.append(f"#{turn.index} {self.names[turn.agent]} [{ACTION_LABELS[turn.action_type]}]\n", style="dim")
        original.append(turn.argument or "(no text)")
        self.query_one("#edit-original", Static).update(original)
        editor = self.query_one(TextArea)
        editor.text = current_text(turn)
        editor.disabled = not is_editable(turn)
        self.query_one("#edit-status", Static).update(message or self.status_text(turn))

    def status_text(self, turn: Turn) -> Text:
        if not is_editable(turn):
            return Text(f"A {turn.action_type.value!r} turn has no text to edit.", style="dim")
        history = [e for e in turn_edits(self.store, self.episode.id) if e.index == turn.index]
        if turn.edited_argument is not None:
            return Text(
                f"{EDIT_MARK} Edited: training uses this text; the original above stays stored. "
                f"{len(history)} change(s) in the history; ^r restores the original.",
                style="yellow",
            )
        note = f" {len(history)} earlier change(s), all undone." if history else ""
        return Text(f"Not edited: training uses the original.{note} Enter or click the box to edit, ^s saves.", style="dim")

    def replace_turn(self, index: int) -> None:
        self.turns[index] = self.store.turns(self.episode.id)[index]
        turn_list = self.query_one("#edit-turn-list", OptionList)
        turn_list.replace_option_prompt_at_index(index, edit_label(self.turns[index], self.names))
        self.changed = True

    def action_save(self) -> None:
        turn = self.current
        if turn is None:
            return
        text = self.query_one(TextArea).text
        if text == current_text(turn):
            self.show_turn(Text("Nothing changed.", style="dim"))
            return
        try:
            edit_turn(self.store, self.episode.id, turn.index, text)
        except CurationError as error:
            self.show_turn(Text(describe(error), style="bold red"))
            self.query_one(TextArea).text = text  # keep what the user typed
            return
        self.replace_turn(turn.index)
        self.show_turn()
        self.notify(f"Turn #{turn.index} edited; the original is kept.")

    def action_restore(self) -> None:
        turn = self.current
        if turn is None:
            return
        try:
            revert_turn(self.store, self.episode.id, turn.index)
        except CurationError as error:
            self.show_turn(Text(describe(error), style="bold red"))
            return
        self.replace_turn(turn.index)
        self.show_turn()
        self.notify(f"Turn #{turn.index} is back to its original text.")

    def unsaved(self) -> bool:
        turn = self.current
        editor = self.query_one(TextArea)
        return turn is not None and not editor.disabled and editor.text != current_text(turn)

    def action_close(self) -> None:
        if self.unsaved() and not self.warned_unsaved:
            self.warned_unsaved = True
            self.notify("This turn has an unsaved edit: ^s saves it, Esc again leaves without saving.")
            return
        self.dismiss(self.changed)
