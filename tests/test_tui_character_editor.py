"""The character editor driven headless: validation as you type, save, relationships, export."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
from textual.widgets import Input, Select, Static, TextArea

from sotopia_pi import paths
from sotopia_pi.config import Settings
from sotopia_pi.library import character_from_dict, load_library
from sotopia_pi.profiles import RelationshipLevel, valid_pairs
from sotopia_pi.store import NotFound, Store
from tui.app import SotopiaApp
from tui.screens.character_editor import CharacterEditorScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.prompt import PromptScreen

from .test_authoring import NEW_CHARACTER
from .test_tui import plain
from .tui_support import wait_until

SIZE = (120, 40)


def library_app(store: Store) -> SotopiaApp:
    return SotopiaApp(store, Settings(), load_library=True)


async def open_editor(app: SotopiaApp, pilot, character_id: str | None = None) -> tuple[CharacterEditorScreen, list]:
    """Push the editor; the returned list receives what it is dismissed with."""
    results: list = []
    screen = CharacterEditorScreen(app.store, character_id)
    app.push_screen(screen, results.append)
    await wait_until(pilot, lambda: app.screen is screen and screen.is_mounted, what="the character editor")
    await pilot.pause()
    return screen, results


def error_line(screen: CharacterEditorScreen, name: str) -> str:
    line = screen.query_one(f"#char-{name}-error", Static)
    return plain(line) if line.display else ""


def summary(screen: CharacterEditorScreen) -> str:
    return plain(screen.query_one("#char-summary", Static))


def field_text(value) -> str:
    return ", ".join(value) if isinstance(value, list) else str(value)


async def fill(screen: CharacterEditorScreen, pilot, data: dict) -> None:
    for name, value in data.items():
        widget = screen.query_one(f"#char-{name}")
        if isinstance(widget, TextArea):
            widget.text = field_text(value)
        else:
            widget.value = field_text(value)
    await pilot.pause()


async def test_errors_appear_under_the_field_as_you_type_and_go_when_fixed(store: Store):
    app = library_app(store)
    async with app.run_test(size=SIZE) as pilot:
        screen, _ = await open_editor(app, pilot)
        assert "problems" in summary(screen)
        assert error_line(screen, "age") == ""  # not typed in yet: no error shown

        age = screen.query_one("#char-age", Input)
        age.focus()
        await pilot.press("1", "2")
        assert age.value == "12"
        assert "between 18 and 70" in error_line(screen, "age")
        await pilot.press("backspace", "backspace", "4", "1")
        assert error_line(screen, "age") == ""

        secret = screen.query_one("#char-secret", TextArea)
        secret.focus()
        await pilot.press("x", "backspace")
        assert "required" in error_line(screen, "secret")
        await pilot.press(*"Hides a debt")
        assert error_line(screen, "secret") == ""

        await fill(screen, pilot, {**NEW_CHARACTER, "moral_values": " , "})
        assert "at least one value" in error_line(screen, "moral_values")
        assert summary(screen).startswith("1 problem")
        await fill(screen, pilot, {"moral_values": "Loyalty, Authority"})
        assert summary(screen).startswith("ready to save")


async def test_save_with_errors_saves_nothing_and_shows_every_problem(store: Store):
    app = library_app(store)
    async with app.run_test(size=SIZE) as pilot:
        screen, _ = await open_editor(app, pilot)
        before = store.counts()
        await fill(screen, pilot, {"first_name": "Ilse", "age": "abc"})
        assert error_line(screen, "occupation") == ""
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert store.counts() == before
        assert "integer" in error_line(screen, "age")
        assert "required" in error_line(screen, "occupation")  # after a refused save, every field shows
        assert screen.character_id is None
        assert screen.query_one("#relation-add").disabled


async def test_a_valid_new_character_is_stored_and_returned(store: Store):
    app = library_app(store)
    async with app.run_test(size=SIZE) as pilot:
        screen, results = await open_editor(app, pilot)
        with pytest.raises(NotFound):
            store.character("ilse-brandvold")
        await fill(screen, pilot, NEW_CHARACTER)
        assert summary(screen).startswith("ready to save")
        await pilot.press("ctrl+s")
        await pilot.pause()
        stored = store.character("ilse-brandvold")
        assert stored.model_dump(exclude={"id", "tag"}) == NEW_CHARACTER
        assert "unsaved" not in summary(screen)
        assert not screen.query_one("#relation-add").disabled
        await pilot.press("escape")
        await wait_until(pilot, lambda: results == ["ilse-brandvold"], what="the editor to return the new id")


async def test_editing_keeps_the_id_and_leaving_with_changes_asks_first(store: Store):
    app = library_app(store)
    async with app.run_test(size=SIZE) as pilot:
        count = len(store.characters())
        screen, results = await open_editor(app, pilot, "mara-okafor")
        assert screen.query_one("#char-first_name", Input).value == "Mara"
        assert summary(screen).startswith("ready to save")
        await fill(screen, pilot, {"occupation": "charge nurse"})
        assert "unsaved changes" in summary(screen)

        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the discard question")
        await pilot.press("n")
        await wait_until(pilot, lambda: app.screen is screen, what="back to the editor")
        assert screen.query_one("#char-occupation", Input).value == "charge nurse"

        await pilot.press("ctrl+s")
        await pilot.pause()
        assert store.character("mara-okafor").occupation == "charge nurse"
        assert len(store.characters()) == count  # updated, not added

        await fill(screen, pilot, {"occupation": "something else"})
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the discard question")
        await pilot.press("y")
        await wait_until(pilot, lambda: results == ["mara-okafor"], what="the editor to close")
        assert store.character("mara-okafor").occupation == "charge nurse"


async def test_leaving_an_untouched_editor_returns_none(store: Store):
    app = library_app(store)
    async with app.run_test(size=SIZE) as pilot:
        _, results = await open_editor(app, pilot, "mara-okafor")
        await pilot.press("escape")
        await wait_until(pilot, lambda: results == [None], what="the editor to close without asking")


async def choose_relationship(screen: CharacterEditorScreen, pilot, other: str, level: str | None, story: str) -> None:
    screen.query_one("#relation-other", Select).value = other
    if level is not None:
        screen.query_one("#relation-level", Select).value = level
    screen.query_one("#relation-story", Input).value = story
    screen.query_one("#relation-add").focus()
    await pilot.press("enter")
    await pilot.pause()


async def test_a_relationship_added_here_lets_the_character_play_scenarios_at_that_level(store: Store):
    app = library_app(store)
    async with app.run_test(size=SIZE) as pilot:
        screen, _ = await open_editor(app, pilot)
        await fill(screen, pilot, NEW_CHARACTER)
        await pilot.press("ctrl+s")
        await pilot.pause()
        friend_scenarios = [s for s in store.scenarios() if s.relationship == RelationshipLevel.friend
                            and not (s.age_constraint or s.occupation_constraint or s.agent_constraint)]

        def pairs() -> list:
            characters = {c.id: c for c in store.characters()}
            return [p for p in valid_pairs(friend_scenarios[0], characters, store.relationships()) if "ilse-brandvold" in p]

        assert pairs() == []
        count = len(store.relationships())
        await choose_relationship(screen, pilot, "mara-okafor", None, "Night ferry regulars.")
        assert "level" in plain(screen.query_one("#relation-error", Static))
        assert len(store.relationships()) == count

        await choose_relationship(screen, pilot, "mara-okafor", "friend", "Night ferry regulars.")
        assert plain(screen.query_one("#relation-error", Static)) == ""
        assert len(store.relationships()) == count + 1
        assert ("ilse-brandvold", "mara-okafor") in pairs()
        listed = plain(screen.query_one("#relation-list", Static))
        assert "friend with Mara Okafor" in listed and "Night ferry regulars." in listed


async def test_export_asks_for_a_folder_and_writes_files_that_load_back(store: Store, tmp_path: Path):
    app = library_app(store)
    async with app.run_test(size=SIZE) as pilot:
        screen, _ = await open_editor(app, pilot)
        await fill(screen, pilot, NEW_CHARACTER)
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert not isinstance(app.screen, PromptScreen)  # nothing stored yet to export
        await pilot.press("ctrl+s")
        await choose_relationship(screen, pilot, "mara-okafor", "friend", "Night ferry regulars.")

        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen), what="the folder question")
        folder = app.screen.query_one("#prompt-folder", Input)
        assert folder.value == str(paths.home() / "library-export")
        folder.value = str(tmp_path / "mine")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen, what="back to the editor")

    characters = tomllib.loads((tmp_path / "mine" / "characters.toml").read_text(encoding="utf-8"))["character"]
    assert [character_from_dict(c).id for c in characters] == ["ilse-brandvold"]
    relationships = tomllib.loads((tmp_path / "mine" / "relationships.toml").read_text(encoding="utf-8"))["relationship"]
    assert [(r["agent2_id"], r["relationship"]) for r in relationships] == [("mara-okafor", "friend")]


async def test_export_into_the_library_copy_keeps_it_loadable(store: Store, tmp_path: Path):
    root = tmp_path / "scenarios"
    shutil.copytree(paths.library_dir(), root)
    app = library_app(store)
    async with app.run_test(size=SIZE) as pilot:
        screen, _ = await open_editor(app, pilot, "mara-okafor")
        await fill(screen, pilot, {"age": "35"})
        await pilot.press("ctrl+s")
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen), what="the folder question")
        app.screen.query_one("#prompt-folder", Input).value = str(root)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen, what="back to the editor")
    assert load_library(root).character_map["mara-okafor"].age == 35


async def test_the_library_opens_the_editor_and_shows_the_saved_character(store: Store):
    app = library_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+t")  # the characters tab
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: isinstance(app.screen, CharacterEditorScreen), what="a new character form")
        screen = app.screen
        await fill(screen, pilot, NEW_CHARACTER)
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, CharacterEditorScreen), what="back in the library")
        library = app.screen
        assert "ilse-brandvold" in library.characters
        highlighted = library.query_one("#character-list").highlighted_option
        assert highlighted is not None and highlighted.id == "ilse-brandvold"
        await pilot.press("ctrl+o")  # edit the highlighted character
        await wait_until(pilot, lambda: isinstance(app.screen, CharacterEditorScreen), what="the editor on it")
        assert app.screen.character_id == "ilse-brandvold"
        assert app.screen.query_one("#char-occupation", Input).value == "ferry captain"
