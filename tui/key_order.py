"""Every key reaches the widget that has the focus once the keys before it are done.

Textual hands a key to the focused widget's message queue, and an unhandled key then climbs
one queue at a time (the widget, each container, the screen) to the app, where the bindings
run: Tab moves the focus, ^n opens a screen. A key typed while the one before it is still on
that climb is handed to the widget that had the focus when it arrived: `Bo`, Tab, `42` typed
at 120 ms per key on a busy machine left `Bo42` in one field and nothing in the next.

So the app holds each key until the one before it has finished: a `KeyTrail` message follows
every key through the same queues (a queue keeps its order, so the trail reaches the app only
after the key has been handled or has climbed past), and a new screen must have mounted (set
its focus) first. Keys are held, never dropped, and pastes keep their place among them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from textual import events
from textual.app import App, ScreenStackError
from textual.message import Message
from textual.message_pump import MessagePump
from textual.screen import Screen

# Only a trail whose queue has gone away (its widget removed, say by the key closing its screen)
# can fail to arrive; this is a last resort against a key held for ever.
TRAIL_GIVE_UP_SECONDS = 2.0
POLL_SECONDS = 0.02


class KeyTrail(Message):
    """Follows one key up the queues it climbs; the next key is sent once the key has been
    handled on the way (a text box took a character) or this trail has reached the app."""

    def __init__(self, key: events.Key | events.Paste | None, app: OrderedKeysApp) -> None:
        super().__init__()
        self.key = key
        self.owner = app
        self.at: MessagePump | None = None
        self.lost = False
        self.sent = time.monotonic()

    def _bubble_to(self, widget: MessagePump) -> None:
        # Called by the widget that has just handled this trail (so the key before it too),
        # to pass it on. A key stopped below the screen was taken by a widget and will not
        # reach the bindings: done. (A screen stops every key it passes to the app.)
        below_screen = self.at is not None and not isinstance(self.at, (Screen, App))
        if self.key is not None and self.key._stop_propagation and below_screen:
            self.owner.key_done(self)
            return
        self.at = widget
        self._no_default_action = False
        if not widget.post_message(self):  # a closing widget refuses it
            self.lost = True

    def stranded(self) -> bool:
        """Whether this trail can no longer reach the app."""
        at = self.at
        if self.lost or at is None or at is at.app:
            return self.lost
        gone = at._closing or at._closed or not getattr(at, "is_attached", True)
        return gone or time.monotonic() - self.sent > TRAIL_GIVE_UP_SECONDS


class SendHeldKeys(Message):
    """Posted by the app to itself, so that whatever a key queued on the app (a focus change
    asked for with `Widget.focus`, a screen's result) runs before the next key is sent."""


class OrderedKeysApp(App):
    """An App whose keys (and pastes) are handed on one at a time, in order."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._held_input: deque[events.Key | events.Paste] = deque()
        self._trail: KeyTrail | None = None
        self._poll_pending = False

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.Paste)) and not event.is_forwarded:
            self._held_input.append(event)
            await self._send_held_keys()
            return
        await super().on_event(event)

    async def _send_held_keys(self) -> None:
        while self._held_input and self._trail is None:
            if not self._screen_ready():
                self._poll_soon()
                return
            event = self._held_input.popleft()
            target = self.focused or self.screen
            await super().on_event(event)  # a priority binding runs here; otherwise it is forwarded
            trail = self._trail = KeyTrail(event, self)
            if event.is_forwarded:
                trail._bubble_to(target)
            else:
                trail._bubble_to(self)
            self._poll_soon()

    def _screen_ready(self) -> bool:
        try:
            return self.screen.is_mounted
        except ScreenStackError:  # no screen yet, or the app is closing: keep the keys
            return False

    def on_key_trail(self, trail: KeyTrail) -> None:
        trail.stop()
        self.key_done(trail)

    def key_done(self, trail: KeyTrail) -> None:
        if trail is self._trail:
            self._trail = None
            if self._held_input:
                self.post_message(SendHeldKeys())

    async def on_send_held_keys(self, message: SendHeldKeys) -> None:
        await self._send_held_keys()

    def _poll_soon(self) -> None:
        if not self._poll_pending:
            self._poll_pending = True
            asyncio.get_running_loop().call_later(POLL_SECONDS, self._poll)

    def _poll(self) -> None:
        """The slow path: a new screen still mounting, or a trail that cannot arrive."""
        self._poll_pending = False
        if self._trail is not None and self._trail.stranded():
            self._trail = None
        if self._trail is None and self._held_input:
            self.post_message(SendHeldKeys())
        elif self._trail is not None:
            self._poll_soon()
