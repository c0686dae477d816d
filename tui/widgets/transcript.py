"""The transcript: one widget per turn, the argument growing as the agent's tokens arrive."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widget import Widget

from sotopia_pi.backends import adapter_identity
from sotopia_pi.episode import ActionType, Turn
from sotopia_pi.prompts import partial_argument

ACTION_LABELS = {
    ActionType.none: "does nothing",
    ActionType.speak: "speaks",
    ActionType.non_verbal: "non-verbal",
    ActionType.action: "acts",
    ActionType.leave: "leaves",
}


@dataclass(frozen=True)
class AdapterChange:
    """From turn `index` on, `side`'s model played with `adapter` (None: the base model)."""

    index: int
    side: int
    adapter: str | None
    first: bool = False  # the side's first model turn (it started with this adapter)


def turn_adapter(turn: Turn) -> str | None:
    """The adapter a model's turn was played with, as the turn records it (None: the base)."""
    return turn.adapter or None


def adapter_label(adapter: str | None) -> str:
    """A short name: `NAME@vN` for a registered adapter's file, NAME for a shipped one, a
    path's last part, or as given."""
    if not adapter:
        return "the base model"
    identity = adapter_identity(adapter)
    parts = Path(identity).parts
    return parts[-1] if len(parts) > 1 else identity


def adapter_changes(turns: list[Turn]) -> list[AdapterChange]:
    """Where a side's adapter changed between two of its model turns (a person's turns are
    skipped), and the adapter each side started with when it had one."""
    last: dict[int, str | None] = {}
    changes = []
    for turn in sorted(turns, key=lambda t: t.index):
        if turn.by_human:
            continue
        adapter = turn_adapter(turn)
        if turn.agent not in last:
            if adapter:
                changes.append(AdapterChange(turn.index, turn.agent, adapter, first=True))
        elif last[turn.agent] != adapter:
            changes.append(AdapterChange(turn.index, turn.agent, adapter))
        last[turn.agent] = adapter
    return changes


def change_text(change: AdapterChange, speaker: str) -> str:
    what = f"adapter {adapter_label(change.adapter)}" if change.adapter else "the base model"
    verb = "plays" if change.first else "now plays"
    return f"— {speaker} {verb} with {what} —"


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


WROTE_MAX_CHARS = 400


def model_wrote(turn: Turn) -> str:
    """What a model wrote for a turn saved with no argument ([does nothing], [leaves]), so that
    the text streamed on screen does not just vanish ("" when there is nothing to add)."""
    if turn.by_human or turn.argument or turn.action_type not in (ActionType.none, ActionType.leave):
        return ""
    raw = turn.raw_output.strip()
    if not turn.parse_note and not partial_argument(raw).strip():
        return ""  # a clean leave or silence: it said nothing more
    return raw if len(raw) <= WROTE_MAX_CHARS else raw[:WROTE_MAX_CHARS] + "…"


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
        self.change_note = ""  # "— Tomas now plays with adapter bc-1@v1 —" above the turn
        if turn is not None:
            self.commit(turn)
        else:
            self.set_class(by_human, "human")
            self.set_class(True, "pending")

    def render(self) -> Text:
        body = self._body()
        if not self.change_note:
            return body
        return Text.assemble((self.change_note, "bold magenta"), "\n", body)

    def _body(self) -> Text:
        turn = self.committed
        if turn is None:
            if self.by_human:
                return turn_text(self.index, self.speaker + " (you)", "your move: choose below", "")
            return turn_text(self.index, self.speaker, "…" if self.streamed else "thinking…", self.streamed)
        who = self.speaker + (" (you)" if turn.by_human else "")
        note = f"({turn.parse_note})" if turn.parse_note else ""
        text = turn_text(turn.index, who, ACTION_LABELS[turn.action_type], turn.argument, note)
        wrote = model_wrote(turn)
        if wrote:
            text.append("\nthe model wrote: ", style="dim italic")
            text.append(wrote, style="dim")
        return text

    def mark_change(self, note: str) -> None:
        self.change_note = note
        self.set_class(bool(note), "adapter-change")
        self.refresh(layout=True)

    def stream(self, argument: str) -> None:
        if self.committed is None:
            self.streamed = argument
            self.refresh(layout=self._height_changed())

    def _height_changed(self) -> bool:
        """Whether the text now wraps to a different number of lines. A layout reflows the
        whole screen and repaints it; most tokens only add words to the last line, which a
        repaint of this one turn shows."""
        width = self.size.width
        if not width:
            return True
        self.clear_cached_dimensions()
        return self.get_content_height(self.size, self.size, width) != self.size.height

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
        self.changes: list[AdapterChange] = []

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
        self._mark_changes()

    def _mark_changes(self) -> None:
        """Mark the turns from which a side played with another adapter (or the base again)."""
        turns = [view.committed for view in self._views.values() if view.committed is not None]
        self.changes = adapter_changes(turns)
        notes = {c.index: change_text(c, self.names[c.side]) for c in self.changes}
        for index, view in self._views.items():
            if view.change_note != notes.get(index, ""):
                view.mark_change(notes.get(index, ""))

    def drop_pending(self) -> None:
        """Remove an attempt that was abandoned (pause, stop) and will be replayed later."""
        for index, view in list(self._views.items()):
            if view.committed is None:
                del self._views[index]
                view.remove()

    def load(self, turns: list[Turn]) -> None:
        views = [TurnView(t.index, t.agent, self.names[t.agent], turn=t) for t in turns]
        self._views.update((view.index, view) for view in views)
        self._mark_changes()
        self.mount_all(views)
        self.call_after_refresh(self.scroll_end, animate=False)

    def text(self) -> str:
        """Everything the transcript shows, in turn order (for tests and copying)."""
        return "\n".join(self._views[index].render().plain for index in sorted(self._views))

    def last_text(self) -> str:
        if not self._views:
            return ""
        return self._views[max(self._views)].render().plain
