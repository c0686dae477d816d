"""A small modal that picks a registered adapter (or the base model) for one side.

Used by the live episode (swap a side's adapter between turns) and by the library (start an
episode as a person against an adapter). Enter picks the highlighted line; on the live screen,
1 and 2 choose which side the pick is for.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from sotopia_pi.adapters import AdapterRecord

BASE_OPTION = "\x00base"


@dataclass(frozen=True)
class AdapterPick:
    """What the picker answers: a side and an adapter record (None: the base model)."""

    side: int
    record: AdapterRecord | None


def heldout_summary(record: AdapterRecord) -> str:
    """`held-out loss 2.41 -> 2.10 (base -> adapter)`, or '' when the record has no such metric."""
    base = record.metrics.get("heldout_loss_base")
    adapter = record.metrics.get("heldout_loss_adapter")
    if not isinstance(base, (int, float)) or not isinstance(adapter, (int, float)):
        return ""
    return f"held-out loss {base:.3f} → {adapter:.3f}"


def adapter_line(record: AdapterRecord, side_base: str | None) -> Text:
    text = Text.assemble((record.reference, "bold"), f"  on {record.base_model}")
    summary = heldout_summary(record)
    if summary:
        text.append(f"  · {summary}", style="dim")
    if record.status == "peft-only" and side_base is not None and not side_base.startswith("hf:"):
        text.append("  · PEFT only: needs an hf: model", style="yellow")
    if side_base is not None and record.base_model != side_base:
        text.append(f"  · trained on another base than {side_base}", style="yellow")
    return text


class AdapterPickerScreen(ModalScreen[AdapterPick | None]):
    DEFAULT_CSS = """
    AdapterPickerScreen {
        align: center middle;
    }
    #picker-box {
        width: 90%;
        max-width: 100;
        height: auto;
        max-height: 90%;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    #picker-title {
        height: auto;
    }
    #picker-list {
        height: auto;
        max-height: 16;
    }
    """
    BINDINGS = [
        Binding("escape", "dismiss_none", "Cancel"),
        Binding("1", "side(0)", "Side 1", show=False),
        Binding("2", "side(1)", "Side 2", show=False),
    ]

    def __init__(
        self,
        records: list[AdapterRecord],
        *,
        title: str,
        sides: dict[int, str],
        side: int,
        bases: dict[int, str | None] | None = None,
        current: dict[int, str | None] | None = None,
        with_base: bool = True,
    ) -> None:
        """`sides`: the sides one may pick for, with their labels; `bases`: each side's base model
        (to flag adapters trained on another); `current`: each side's adapter now."""
        super().__init__()
        self.records = records
        self.title_text = title
        self.sides = sides
        self.side = side if side in sides else min(sides)
        self.bases = bases or {}
        self.current = current or {}
        self.with_base = with_base

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-box"):
            yield Static(id="picker-title")
            yield OptionList(id="picker-list")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._fill()
        self.query_one(OptionList).focus()

    def _fill(self) -> None:
        title = Text(self.title_text + "\n", style="bold")
        title.append(f"for {self.sides[self.side]}", style="bold cyan")
        if len(self.sides) > 1:
            title.append("   (1 / 2 picks the side)", style="dim")
        now = self.current.get(self.side)
        if self.side in self.current:
            title.append(f"\nnow: {'adapter ' + now if now else 'the base model'}", style="dim")
        self.query_one("#picker-title", Static).update(title)
        options = self.query_one(OptionList)
        highlighted = options.highlighted
        options.clear_options()
        if self.with_base:
            options.add_option(Option(Text("base model (no adapter)", style="bold"), id=BASE_OPTION))
        base = self.bases.get(self.side)
        for index, record in enumerate(self.records):
            options.add_option(Option(adapter_line(record, base), id=str(index)))
        if not self.records:
            options.add_option(Option(Text("No trained adapter yet: train one on the Train screen (F7).", style="dim"), disabled=True))
        options.highlighted = highlighted if highlighted is not None else 0

    def action_side(self, side: int) -> None:
        if side in self.sides:
            self.side = side
            self._fill()

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    @on(OptionList.OptionSelected, "#picker-list")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        option_id = event.option.id
        if option_id is None:
            return
        record = None if option_id == BASE_OPTION else self.records[int(option_id)]
        self.dismiss(AdapterPick(self.side, record))
