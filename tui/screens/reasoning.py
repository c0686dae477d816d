"""The judge's reasoning, on demand, for one evaluation."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from sotopia_pi.episode import Evaluation
from sotopia_pi.judge import DimensionSet

from ..clipboard import copy
from ..widgets.scores import reasoning_text


class ReasoningScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,r,q", "dismiss", "Close"),
        Binding("c", "copy", "Copy the reasoning"),
    ]

    def __init__(self, evaluation: Evaluation, names: tuple[str, str], dimensions: DimensionSet) -> None:
        super().__init__()
        self.evaluation = evaluation
        self.names = names
        self.dimensions = dimensions

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="reasoning-box"):
            yield Static(reasoning_text(self.evaluation, self.names, self.dimensions), id="reasoning")
        yield Footer(compact=True)

    def action_copy(self) -> None:
        text = reasoning_text(self.evaluation, self.names, self.dimensions).plain
        copy(self.app, text, "the judge's reasoning")
