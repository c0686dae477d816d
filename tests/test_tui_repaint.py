"""What reaches the terminal matches what the app means to show (issue 13, defect 1).

A Pilot app writes nothing, so these tests keep a small virtual terminal: every update the app
would write (its `_display` calls outside an update batch, rendered to the escape sequences a
terminal gets) is applied to a grid of cells, and after each step the grid must equal the
app's own picture of its screen (the compositor's strips). A paint Textual throws away inside an
update batch leaves the old text in the grid, as it did on tmux.
"""

from __future__ import annotations

import re

import pytest
from rich.cells import get_character_cell_size
from textual._compositor import CompositorUpdate
from textual._context import visible_screen_stack

from sotopia_pi.config import Settings
from sotopia_pi.store import Store
from tui.app import SotopiaApp
from tui.screens.library import LibraryScreen

from .factories import seed_store
from .tui_support import wait_until

SIZE = (100, 30)
ESCAPE = re.compile(r"\x1b\[(\d+);(\d+)H|\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\n")


class VirtualTerminal:
    def __init__(self, columns: int, rows: int) -> None:
        self.columns, self.rows = columns, rows
        self.cells = [[" "] * columns for _ in range(rows)]
        self.x = self.y = 0

    def write(self, data: str) -> None:
        position = 0
        for match in ESCAPE.finditer(data):
            self._text(data[position : match.start()])
            if match.group(1):
                self.y, self.x = int(match.group(1)) - 1, int(match.group(2)) - 1
            position = match.end()
        self._text(data[position:])

    def _text(self, text: str) -> None:
        for character in text:
            width = get_character_cell_size(character)
            if width == 0 or not 0 <= self.y < self.rows:
                continue
            if self.x < self.columns:
                self.cells[self.y][self.x] = character
            if width == 2 and self.x + 1 < self.columns:
                self.cells[self.y][self.x + 1] = ""
            self.x += width

    def lines(self) -> list[str]:
        return ["".join(row).rstrip() for row in self.cells]


def watch_terminal(app: SotopiaApp) -> VirtualTerminal:
    """Feed the terminal every update the app writes (and none it throws away)."""
    terminal = VirtualTerminal(*SIZE)
    display = app._display

    def write_then_display(screen, renderable) -> None:
        if renderable is not None and not app._batch_count and isinstance(renderable, CompositorUpdate):
            terminal.write(renderable.render_segments(app.console))
        display(screen, renderable)

    app._display = write_then_display
    return terminal


def app_picture(app: SotopiaApp) -> list[str]:
    visible_screen_stack.set(app._background_screens)
    return [strip.text.rstrip() for strip in app.screen._compositor.render_strips()]


async def settled(pilot) -> None:
    await pilot.pause(0.1)
    await pilot.wait_for_scheduled_animations()
    await pilot.pause(0.1)


def differences(terminal: VirtualTerminal, app: SotopiaApp) -> list[tuple[int, str, str]]:
    return [(row, shown, meant) for row, (shown, meant) in enumerate(zip(terminal.lines(), app_picture(app))) if shown != meant]


@pytest.fixture
def library_app(store: Store) -> SotopiaApp:
    seed_store(store)
    return SotopiaApp(store, Settings(), load_library=False)


async def test_a_paint_thrown_away_inside_a_batch_is_made_again(library_app: SotopiaApp):
    app = library_app
    terminal = watch_terminal(app)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen) and app.screen.is_mounted)
        await settled(pilot)
        assert differences(terminal, app) == []
        library = app.screen
        # a layout refresh while a batch is open (a screen shown again, or resized, while a
        # widget recomposes): Textual paints the regions the layout freed, throws the paint
        # away, and forgets the regions, so the hidden text stayed on the terminal
        with app.batch_update():
            library.query_one("#details-scroll").display = False
            library._refresh_layout(library.size)
            await pilot.pause(0.1)
        await settled(pilot)
        assert differences(terminal, app) == []


@pytest.mark.parametrize(
    "keys",
    [
        ("ctrl+t", "ctrl+t"),  # the tabs switch inside a batch
        ("slash", "escape", "ctrl+t", "ctrl+n"),  # footer recomposes, then a screen opens
    ],
)
async def test_the_terminal_shows_every_step_of_a_walk_through_the_library(library_app: SotopiaApp, keys):
    app = library_app
    terminal = watch_terminal(app)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen) and app.screen.is_mounted)
        await settled(pilot)
        for key in keys:
            await pilot.press(key)
            await settled(pilot)
            assert differences(terminal, app) == [], f"after {key}"
