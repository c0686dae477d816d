"""The curation filter bar: type a filter, see every active one explained with what it cut,
remove one. Parsing and checking stay with the screen (and the engine); this only shows."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from sotopia_pi.dataset.filters import FILTER_GRAMMAR
from sotopia_pi.dataset.selection import Selection

ORDER_NOTE = (
    "Filters run in order, each on what the one before kept. Sides rejected by hand are left out "
    "before the first; sides kept by hand are added after the last."
)


def filter_option(number: int, spec: str, explanation: str, before: int | None, after: int | None) -> Text:
    text = Text()
    text.append(f"{number}. ", style="dim")
    text.append(spec, style="bold cyan")
    if before is not None:
        text.append(f"  {before} → {after} sides", style="yellow")
    text.append(f"\n   {explanation}")
    return text


class ActiveFilters(OptionList):
    BINDINGS = [Binding("delete,backspace", "remove", "Remove filter")]

    class RemoveRequested(Message):
        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def action_remove(self) -> None:
        if self.highlighted is not None and self.option_count:
            self.post_message(self.RemoveRequested(self.highlighted))


class FilterBar(Vertical):
    DEFAULT_CSS = """
    FilterBar {
        height: auto;
    }
    #filter-grammar {
        display: none;
        height: auto;
        padding: 0 1;
        background: $boost;
    }
    FilterBar.typing #filter-grammar {
        display: block;
    }
    #filter-error {
        height: auto;
        padding: 0 1;
        color: $error;
        text-style: bold;
    }
    #active-filters {
        height: auto;
        max-height: 9;
    }
    #filter-notes {
        height: auto;
        padding: 0 1;
        color: $text-muted;
    }
    """

    class AddRequested(Message):
        def __init__(self, spec: str) -> None:
            super().__init__()
            self.spec = spec

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder="add a filter and press Enter: best-side · cutoff:goal>=7:balance · top:20% · tag:gold …",
            id="filter-input",
        )
        yield Static(Text.assemble((f"{ORDER_NOTE}\n", "italic"), FILTER_GRAMMAR), id="filter-grammar")
        yield Static("", id="filter-error")
        yield ActiveFilters(id="active-filters")
        yield Static("", id="filter-notes")

    def on_mount(self) -> None:
        self.query_one(ActiveFilters).display = False
        self.query_one("#filter-error").display = False

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        self.set_class(isinstance(event.widget, Input), "typing")

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        if isinstance(event.widget, Input):
            self.remove_class("typing")

    @on(Input.Submitted, "#filter-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip():
            self.post_message(self.AddRequested(event.value.strip()))

    @on(Input.Changed, "#filter-input")
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self.show_error("")

    def show_error(self, message: str) -> None:
        error = self.query_one("#filter-error", Static)
        error.update(message)
        error.display = bool(message)

    def accepted(self) -> None:
        """The last spec became a filter: clear the box for the next one."""
        self.query_one("#filter-input", Input).value = ""
        self.show_error("")

    def show(self, specs: Sequence[str], selection: Selection | None) -> None:
        """List the active filters with their explanations and, once a selection has been
        made with them, how many sides each one took in and let through."""
        steps = selection.steps if selection is not None else []
        options = []
        for number, spec in enumerate(specs):
            step = steps[number] if number < len(steps) else None
            explanation = step.explanation if step else ""
            options.append(
                Option(
                    filter_option(number + 1, spec, explanation, step and step.before, step and step.after),
                    id=str(number),
                )
            )
        active = self.query_one(ActiveFilters)
        highlighted = active.highlighted
        active.clear_options()
        active.add_options(options)
        active.display = bool(options)
        if options:
            active.highlighted = min(highlighted or 0, len(options) - 1)
        self.query_one("#filter-notes", Static).update(self.notes(selection))

    @staticmethod
    def notes(selection: Selection | None) -> str:
        """What the manual decisions did (the filters' own lines are in the list above)."""
        if selection is None:
            return ""
        step_lines = tuple(step.explanation for step in selection.steps)
        return " · ".join(line for line in selection.explain() if not line.startswith(step_lines or ("\0",)))
