"""The copy keys: a turn, the judge's reasoning or an episode id to the terminal's clipboard
(Textual sends it with OSC 52, which most terminals and tmux with set-clipboard accept)."""

from __future__ import annotations

from textual.app import App

from sotopia_pi.episode import Turn

from .widgets.transcript import ACTION_LABELS


def turn_as_text(turn: Turn, names: tuple[str, str]) -> str:
    """One turn as a person would quote it: `#3 Tomas Reyes [speaks]: Two hundred, cash.`"""
    who = names[turn.agent] + (" (person)" if turn.by_human else "")
    line = f"#{turn.index} {who} [{ACTION_LABELS[turn.action_type]}]"
    return f"{line}: {turn.argument}" if turn.argument else line


def copy(app: App, text: str, what: str) -> None:
    app.copy_to_clipboard(text)
    app.notify(f"Copied {what} to the clipboard.", timeout=3)
