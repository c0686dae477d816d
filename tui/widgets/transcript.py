"""The transcript: one widget per turn, the argument growing as the agent's tokens arrive."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widget import Widget

from sotopia_pi.episode import ActionType, Turn

ACTION_LABELS = {
    ActionType.none: "does nothing",
    ActionType.speak: "speaks",
    ActionType.non_verbal: "non-verbal",
    ActionType.action: "acts",
    ActionType.leave: "leaves",
}


def turn_text(index: int, speaker: str, action: str, argument: str, note: str = "") -> Text:
    text = Text()
    text.append(f"#{index} ", style="dim")
    text.append(speaker, style="bold")
    text.append(f"  [{action}]", style="italic")
    if note:
        text.append(f"  {note}", style="dim")
    if argument:
        text.append("\n")
        text.append(argument)
    return text


class TurnView(Widget):
    """One turn. While the agent generates it shows the argument so far; once committed it
    shows the parsed action."""

    DEFAULT_CSS = "TurnView { height: auto; }"

    def __init__(
        self, index: int, agent: int, speaker: str, by_human: bool = False, turn: Turn | None = None
    ) -> None:
        super().__init__(classes=f"turn side-{agent}")
        self.index = index
        self.agent = agent
        self.speaker = speaker
        self.by_human = by_human
        self.streamed = ""
        self.committed: Turn | None = None
        if turn is not None:
            self.commit(turn)
        else:
            self.set_class(by_human, "human")
            self.set_class(True, "pending")

    def render(self) -> Text:
        turn = self.committed
        if turn is None:
            if self.by_human:
                return turn_text(self.index, self.speaker + " (you)", "your move: choose below", "")
            return turn_text(self.index, self.speaker, "…" if self.streamed else "thinking…", self.streamed)
        who = self.speaker + (" (you)" if turn.by_human else "")
        note = f"({turn.parse_note})" if turn.parse_note else ""
        return turn_text(turn.index, who, ACTION_LABELS[turn.action_type], turn.argument, note)

    def stream(self, argument: str) -> None:
        if self.committed is None:
            self.streamed = argument
            self.refresh(layout=True)

    def commit(self, turn: Turn) -> None:
        self.committed = turn
        self.set_class(False, "pending")
        self.set_class(turn.by_human, "human")
        self.refresh(layout=True)


class Transcript(VerticalScroll):
    """Turns in order; stays pinned to the newest turn unless the user scrolls up."""

    def __init__(self, names: tuple[str, str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.names = names
        self.can_focus = True
        self._views: dict[int, TurnView] = {}

    def _follow(self) -> None:
        """Keep the newest turn in view, unless the user scrolled up to read. (Textual's
        anchor() would also push a short transcript to the bottom of the panel.)"""
        if self.scroll_y >= self.max_scroll_y - 1:
            self.call_after_refresh(self.scroll_end, animate=False)

    def view(self, index: int) -> TurnView | None:
        return self._views.get(index)

    def _add(self, view: TurnView) -> TurnView:
        old = self._views.pop(view.index, None)
        if old is not None:
            old.remove()
        self._views[view.index] = view
        self._follow()
        self.mount(view)
        return view

    def start_turn(self, index: int, agent: int, by_human: bool) -> TurnView:
        """Show a turn in progress; a turn restarted (after a takeover or hand-back) replaces
        the abandoned attempt."""
        return self._add(TurnView(index, agent, self.names[agent], by_human))

    def stream(self, index: int, argument: str) -> None:
        view = self.view(index)
        if view is not None:
            self._follow()
            view.stream(argument)

    def commit(self, turn: Turn) -> None:
        view = self.view(turn.index)
        if view is None:
            self._add(TurnView(turn.index, turn.agent, self.names[turn.agent], turn=turn))
        else:
            view.commit(turn)

    def drop_pending(self) -> None:
        """Remove an attempt that was abandoned (pause, stop) and will be replayed later."""
        for index, view in list(self._views.items()):
            if view.committed is None:
                del self._views[index]
                view.remove()

    def load(self, turns: list[Turn]) -> None:
        views = [TurnView(t.index, t.agent, self.names[t.agent], turn=t) for t in turns]
        self._views.update((view.index, view) for view in views)
        self.mount_all(views)
        self.call_after_refresh(self.scroll_end, animate=False)

    def last_text(self) -> str:
        if not self._views:
            return ""
        return self._views[max(self._views)].render().plain
