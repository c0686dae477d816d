"""The panel a person plays a character from: that character's view, an action chooser and a
text box. It shows only what that character may see (its own goal, never the other's)."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static

from sotopia_pi.episode import ACTION_TYPES, ARGUMENT_MAX_CHARS, ActionType, AgentAction
from sotopia_pi.visibility import View

NEEDS_ARGUMENT = {ActionType.speak, ActionType.non_verbal, ActionType.action}


class ActionChosen(Message):
    def __init__(self, side: int, action: AgentAction) -> None:
        super().__init__()
        self.side = side
        self.action = action


class TakeoverPanel(Vertical):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.side: int | None = None
        self._shown_view: Text | None = None
        self.your_turn = False

    def compose(self) -> ComposeResult:
        yield Label("", id="takeover-title")
        with VerticalScroll(id="takeover-view"):
            yield Static("", id="takeover-context")
        with Horizontal(id="takeover-controls"):
            yield Select(
                [(kind, kind) for kind in ACTION_TYPES],
                value=ActionType.speak.value,
                allow_blank=False,
                id="action-type",
            )
            yield Button("Send", id="send", variant="primary")
        yield Input(
            placeholder="what you say or do (Enter sends)",
            max_length=ARGUMENT_MAX_CHARS,
            id="argument",
        )
        yield Label("", id="takeover-status")

    def play(self, side: int, name: str, view: View) -> None:
        """Show `side`'s own view (its goal first); the person now plays it."""
        context = Text()
        context.append("Your goal: ", style="bold")
        context.append(f"{view.goals[side]}\n\n")
        context.append("What you know (the other side's goal is hidden from you):\n", style="dim")
        context.append(view.render())
        if (side, context) == (self.side, self._shown_view):
            return  # asked again after every turn: updating the same text would re-lay out the screen
        self.side, self._shown_view = side, context
        self.query_one("#takeover-title", Label).update(f"You play {name} (side {side + 1})")
        self.query_one("#takeover-context", Static).update(context)

    def set_turn(self, your_turn: bool, message: str) -> None:
        self.your_turn = your_turn
        if your_turn != self.has_class("your-turn"):
            # Only the panel's own border depends on the class: restyle the panel alone. A class
            # change restyles every widget inside too, tens of ms taken from the keyboard per turn.
            self.set_class(your_turn, "your-turn", update=False)
            self.app.stylesheet.apply(self)
        self.query_one("#takeover-status", Label).update(message)
        if your_turn:
            self.query_one("#argument", Input).focus()

    @on(Input.Submitted, "#argument")
    @on(Button.Pressed, "#send")
    def _send(self, event: Message) -> None:
        event.stop()
        if self.side is None:
            return
        if not self.your_turn:
            self.query_one("#takeover-status", Label).update("Wait: it is not your turn yet.")
            return
        kind = ActionType(self.query_one("#action-type", Select).value)
        argument_box = self.query_one("#argument", Input)
        argument = argument_box.value.strip()
        if kind in NEEDS_ARGUMENT and not argument:
            self.query_one("#takeover-status", Label).update(
                f"Type what you want to {'say' if kind == ActionType.speak else 'do'} first."
            )
            return
        if kind not in NEEDS_ARGUMENT:
            argument = ""
        argument_box.value = ""
        self.post_message(ActionChosen(self.side, AgentAction(action_type=kind, argument=argument)))
