"""Keys typed faster than the app handles them land where they were aimed (issue 13, defect 2).

Pilot's `press` waits for the app to go idle after every key, which hides the defect; these
tests post a burst of keys to the app the way the terminal driver does when someone types
fast on a busy machine, and only then wait.
"""

from __future__ import annotations

from textual import events
from textual.widgets import Input

from sotopia_pi.config import Settings
from sotopia_pi.store import Store
from tui.app import SotopiaApp
from tui.screens.character_editor import CharacterEditorScreen
from tui.screens.library import LibraryScreen

from .factories import seed_store
from .tui_support import wait_until

SIZE = (120, 40)
NAMED = {"tab": "\t", "enter": "\r", "escape": "\x1b", "slash": "/"}


def burst(app: SotopiaApp, *keys: str) -> None:
    """Post every key at once, each a key name (`tab`, `ctrl+n`) or a run of characters."""
    for key in keys:
        if key in NAMED or key.startswith("ctrl+"):
            app.post_message(events.Key(key, NAMED.get(key)))
        else:
            for character in key:
                app.post_message(events.Key(character, character))


def field(screen, name: str) -> str:
    return screen.query_one(f"#char-{name}", Input).value


async def new_character_form(app: SotopiaApp, pilot) -> CharacterEditorScreen:
    await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen) and app.screen.is_mounted)
    await pilot.press("ctrl+t", "ctrl+n")
    await wait_until(pilot, lambda: isinstance(app.screen, CharacterEditorScreen) and app.screen.focused is not None)
    return app.screen


async def test_keys_typed_right_after_tab_go_to_the_next_field(store: Store):
    seed_store(store)
    app = SotopiaApp(store, Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await new_character_form(app, pilot)
        burst(app, "Ann", "tab", "Bo", "tab", "42")
        await wait_until(pilot, lambda: field(screen, "age") or len(field(screen, "first_name")) > 3, what="the typing")
        await pilot.pause()
        assert (field(screen, "first_name"), field(screen, "last_name"), field(screen, "age")) == ("Ann", "Bo", "42")
        assert screen.focused is screen.query_one("#char-age")


async def test_keys_typed_right_after_a_key_that_opens_a_screen_reach_that_screen(store: Store):
    seed_store(store)
    app = SotopiaApp(store, Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen) and app.screen.is_mounted)
        await pilot.press("ctrl+t")
        burst(app, "ctrl+n", "Ann", "tab", "Bo")
        await wait_until(pilot, lambda: isinstance(app.screen, CharacterEditorScreen) and app.screen.is_mounted)
        screen = app.screen
        await wait_until(pilot, lambda: field(screen, "last_name") == "Bo", what="the last name")
        assert field(screen, "first_name") == "Ann"


async def test_keys_typed_right_after_slash_go_into_the_search_box(store: Store):
    seed_store(store)
    app = SotopiaApp(store, Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen) and app.screen.is_mounted)
        library = app.screen
        burst(app, "slash", "jk")  # j and k move in the list when it has the focus
        search = library.query_one("#search", Input)
        await wait_until(pilot, lambda: len(search.value) == 2, what="the search text")
        assert search.value == "jk"
