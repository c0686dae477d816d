"""The curation screen driven headless with Pilot, on a store of episodes with known scores."""

from __future__ import annotations

import pytest
from rich.console import Console
from rich.text import Text
from textual.widgets import DataTable, Input, Static, TextArea

from sotopia_pi.config import Settings
from sotopia_pi.dataset import annotations
from sotopia_pi.dataset.snapshots import list_snapshots, load_snapshot
from sotopia_pi.store import Store
from tui.app import SotopiaApp
from tui.screens.curation import COLUMNS, CurationScreen
from tui.screens.help import HelpScreen
from tui.screens.prompt import PromptScreen
from tui.screens.turn_editor import EDIT_MARK, TurnEditorScreen
from tui.widgets.filter_bar import ActiveFilters

from .curation_helpers import DEFAULT_ACTIONS, add_episode, examples_per_side, seed_profiles
from .helpers import wait_until

SIZE = (120, 40)


def plain(renderable) -> str:
    if isinstance(renderable, str):
        return renderable
    if isinstance(renderable, Text):
        return renderable.plain
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(renderable)
    return console.export_text()


def static_text(screen, selector: str) -> str:
    return plain(screen.query_one(selector, Static).content)


@pytest.fixture
def episodes(store: Store) -> dict:
    """Three judged episodes over two scenarios and one the judge failed on."""
    seed_profiles(store)
    return {
        "high": add_episode(store, (9, 2), minutes=0),
        "low": add_episode(store, (3, 8), minutes=1, tags=("pilot",)),
        "swap": add_episode(store, (7, 7), scenario_id="bike-swap", minutes=2),
        "failed": add_episode(store, (9, 9), scenario_id="bike-swap", failed_side=1, minutes=3),
    }


def make_app(store: Store) -> SotopiaApp:
    return SotopiaApp(store, Settings(), load_library=False)


async def open_curation(pilot) -> CurationScreen:
    await pilot.press("f6")
    screen = pilot.app.screen
    assert isinstance(screen, CurationScreen)
    await settled(pilot, screen)
    return screen


async def settled(pilot, screen: CurationScreen) -> None:
    await wait_until(pilot, lambda: not screen.loading and not screen.counting, what="loading and counting")
    await pilot.pause()


def table_keys(screen: CurationScreen) -> list[str]:
    table = screen.query_one(DataTable)
    return [str(row.key.value) for row in table.ordered_rows]


def cell(screen: CurationScreen, key: str, column: str) -> str:
    return plain(screen.query_one(DataTable).get_cell(key, column))


def put_cursor(screen: CurationScreen, episode_id: str, side: int) -> None:
    table = screen.query_one(DataTable)
    table.move_cursor(row=table.get_row_index(f"{episode_id}:{side}"))


async def click_header(pilot, screen: CurationScreen, column_key: str) -> None:
    table = screen.query_one(DataTable)
    x = 0
    for key, column in table.columns.items():
        if key == column_key:
            break
        x += column.get_render_width(table)
    await pilot.click(table, offset=(x + 2, 0))
    await pilot.pause()


def decision_targets(store: Store) -> dict:
    return annotations.decision_map(store)


async def test_keys_keep_and_reject_sides_and_episodes_in_the_store(store: Store, episodes: dict):
    high, low = episodes["high"], episodes["low"]
    async with make_app(store).run_test(size=SIZE) as pilot:
        screen = await open_curation(pilot)
        assert len(table_keys(screen)) == 8  # no filter: every side of every finished episode
        assert screen.stats is not None and screen.stats.total.sides == 8

        put_cursor(screen, high.id, 0)
        await pilot.press("r")
        assert decision_targets(store) == {(high.id, 0): "reject"}
        assert cell(screen, f"{high.id}:0", "status") == "rejected"
        assert cell(screen, f"{high.id}:0", "decision") == "reject"
        await settled(pilot, screen)
        assert screen.stats.total.sides == 7  # a rejected side produces nothing

        await pilot.press("k")
        assert decision_targets(store) == {(high.id, 0): "keep"}
        assert cell(screen, f"{high.id}:0", "status") == "kept by hand"

        put_cursor(screen, low.id, 1)
        await pilot.press("R")  # the whole episode
        assert decision_targets(store) == {(high.id, 0): "keep", (low.id, None): "reject"}
        assert cell(screen, f"{low.id}:0", "decision") == "reject (ep)"
        assert "reject on the whole episode" in static_text(screen, "#curation-details")

        await pilot.press("u")  # the side has no decision of its own: the episode's goes
        assert decision_targets(store) == {(high.id, 0): "keep"}
        await pilot.press("K")
        assert decision_targets(store) == {(high.id, 0): "keep", (low.id, None): "keep"}
        put_cursor(screen, high.id, 0)
        await pilot.press("u")
        assert decision_targets(store) == {(low.id, None): "keep"}
        await settled(pilot, screen)
        assert screen.stats.total.sides == 8


async def test_a_filter_narrows_the_table_and_the_counts_and_is_explained(store: Store, episodes: dict):
    high, low, swap = episodes["high"], episodes["low"], episodes["swap"]
    side0, side1 = examples_per_side()
    async with make_app(store).run_test(size=SIZE) as pilot:
        screen = await open_curation(pilot)
        await pilot.press("slash", *"cutoff:goal>=7", "enter")
        await settled(pilot, screen)
        expected = {f"{high.id}:0", f"{low.id}:1", f"{swap.id}:0", f"{swap.id}:1"}  # the failed judge never passes
        assert set(table_keys(screen)) == expected
        stats = screen.stats
        assert stats.total.sides == 4
        assert stats.total.examples == 2 * side0 + 2 * side1
        assert stats.per_side["0"].examples == 2 * side0
        assert set(stats.per_scenario) == {"bike-sale", "bike-swap"}
        assert stats.per_scenario["bike-sale"].sides == 2
        options = screen.query_one(ActiveFilters)
        shown = plain(options.get_option_at_index(0).prompt)
        assert "cutoff:goal>=7" in shown and "Keep sides whose goal score is 7 or more." in shown
        assert "8 → 4 sides" in shown
        counts = plain(screen.query_one("#counts-per-scenario", Static).content)
        assert "bike-sale" in counts and "bike-swap" in counts

        # a second filter composes with the first
        await pilot.press("slash", *"scenario:bike-swap", "enter")
        await settled(pilot, screen)
        assert set(table_keys(screen)) == {f"{swap.id}:0", f"{swap.id}:1"}
        assert screen.stats.total.sides == 2 and list(screen.stats.per_scenario) == ["bike-swap"]
        assert "4 → 2 sides" in plain(options.get_option_at_index(1).prompt)

        # a bad filter is refused with the reason and changes nothing
        await pilot.press("slash", *"cutoff:charm>=3", "enter")
        assert "no judged episode has a 'charm' score" in static_text(screen, "#filter-error")
        await pilot.press("ctrl+a", "ctrl+k", *"vibes:high", "enter")
        error = static_text(screen, "#filter-error")
        assert "unknown kind 'vibes'" in error and "best-side" in error
        assert len(screen.filters) == 2 and options.option_count == 2

        # remove the first filter from the list: only the scenario filter is left
        options.focus()
        options.highlighted = 0
        await pilot.press("delete")
        await settled(pilot, screen)
        assert screen.specs == ["scenario:bike-swap"]
        assert set(table_keys(screen)) == {f"{swap.id}:0", f"{swap.id}:1", f"{episodes['failed'].id}:0", f"{episodes['failed'].id}:1"}
        await pilot.press("ctrl+l")
        await settled(pilot, screen)
        assert len(table_keys(screen)) == 8


async def test_a_rejected_side_stays_visible_and_the_next_best_comes_in(store: Store, episodes: dict):
    high, low = episodes["high"], episodes["low"]
    best_again = add_episode(store, (6, 1), minutes=9)
    async with make_app(store).run_test(size=SIZE) as pilot:
        screen = await open_curation(pilot)
        await pilot.press("slash", *"best-side", "enter")
        await settled(pilot, screen)
        assert f"{high.id}:0" in table_keys(screen) and f"{best_again.id}:0" not in table_keys(screen)
        put_cursor(screen, high.id, 0)
        await pilot.press("r")
        await settled(pilot, screen)
        keys = table_keys(screen)
        assert f"{best_again.id}:0" in keys  # the next best side of bike-sale
        assert cell(screen, f"{high.id}:0", "status") == "rejected"  # shown so that u can undo it
        assert (high.id, 0) not in screen.view.selection.kept
        assert "1 side(s) rejected by hand are left out first." in static_text(screen, "#filter-notes")
        await pilot.press("a")  # every side, filtered out or not
        assert len(table_keys(screen)) == 10
        assert cell(screen, f"{low.id}:0", "status") == "filtered out"


async def test_sorting_by_a_column_by_key_and_by_header(store: Store, episodes: dict):
    async with make_app(store).run_test(size=SIZE) as pilot:
        screen = await open_curation(pilot)
        goal_index = [column.key for column in COLUMNS].index("goal")
        await pilot.press(*["s"] * (goal_index + 1))
        assert screen.sort_key == "goal" and screen.sort_descending

        def goals() -> list[float]:
            values = [row.candidate.score("goal") for row in screen.rows]
            return [v for v in values if v is not None]

        assert goals() == sorted(goals(), reverse=True) and goals()[0] == 9
        assert "goal ▼" in plain(screen.query_one(DataTable).columns["goal"].label)
        await click_header(pilot, screen, "goal")  # the same column again: the other way round
        assert goals() == sorted(goals()) and not screen.sort_descending
        await click_header(pilot, screen, "scenario")
        scenarios = [row.candidate.scenario_id for row in screen.rows]
        assert scenarios == sorted(scenarios) and scenarios[0] == "bike-sale"


async def test_tagging_an_episode_and_filtering_by_the_tag(store: Store, episodes: dict):
    swap = episodes["swap"]
    async with make_app(store).run_test(size=SIZE) as pilot:
        screen = await open_curation(pilot)
        put_cursor(screen, swap.id, 1)
        await pilot.press("t")
        assert isinstance(pilot.app.screen, PromptScreen)
        await pilot.press(*"gold, polite", "enter")
        await wait_until(pilot, lambda: pilot.app.screen is screen, what="the tag dialog to close")
        assert annotations.curator_tags(store) == {swap.id: ["gold", "polite"]}
        assert cell(screen, f"{swap.id}:0", "tags") == "gold, polite"

        await pilot.press("t")  # the box starts with the current tags; editing it replaces them
        dialog = pilot.app.screen
        assert dialog.query_one("#prompt-tags", Input).value == "gold, polite"
        await pilot.press(*["backspace"] * len(", polite"), *", reviewed", "enter")
        await wait_until(pilot, lambda: pilot.app.screen is screen, what="the tag dialog to close")
        assert annotations.curator_tags(store) == {swap.id: ["gold", "reviewed"]}
        await pilot.press("t", "escape")  # cancelled: nothing changes
        assert annotations.curator_tags(store) == {swap.id: ["gold", "reviewed"]}

        await pilot.press("slash", *"tag:gold", "enter")
        await settled(pilot, screen)
        assert set(table_keys(screen)) == {f"{swap.id}:0", f"{swap.id}:1"}


async def test_a_turn_edit_is_stored_marked_and_undone_with_the_original_kept(store: Store, episodes: dict):
    high = episodes["high"]
    original = DEFAULT_ACTIONS[1][1]
    new_text = "It is yours for two hundred and eighty, and I will throw in a lock and a pump."
    async with make_app(store).run_test(size=SIZE) as pilot:
        screen = await open_curation(pilot)
        tokens_before = screen.stats.total.tokens
        put_cursor(screen, high.id, 1)
        await pilot.press("e")
        editor_screen = pilot.app.screen
        assert isinstance(editor_screen, TurnEditorScreen)
        assert editor_screen.current.index == 1  # the first turn of the side the cursor was on
        assert original in static_text(editor_screen, "#edit-original")

        await pilot.press("enter")  # into the text box
        editor = editor_screen.query_one(TextArea)
        assert pilot.app.focused is editor and editor.text == original
        editor.select_all()
        await pilot.press(*new_text, "ctrl+s")
        turn = store.turns(high.id)[1]
        assert (turn.argument, turn.edited_argument) == (original, new_text)
        [edit] = annotations.turn_edits(store, high.id)
        assert (edit.index, edit.original, edit.edited) == (1, original, new_text)
        label = plain(editor_screen.query_one("#edit-turn-list").get_option_at_index(1).prompt)
        assert label.startswith(EDIT_MARK)
        assert original in static_text(editor_screen, "#edit-original")  # the original stays in view
        assert "Edited" in static_text(editor_screen, "#edit-status")

        await pilot.press("escape")
        await wait_until(pilot, lambda: pilot.app.screen is screen, what="the curation screen")
        await settled(pilot, screen)
        assert screen.stats.total.tokens > tokens_before  # the longer text counts

        await pilot.press("e")
        editor_screen = pilot.app.screen
        await pilot.press("ctrl+r")  # undo the edit
        turn = store.turns(high.id)[1]
        assert (turn.argument, turn.edited_argument) == (original, None)
        assert [e.edited for e in annotations.turn_edits(store, high.id)] == [new_text, None]
        assert not plain(editor_screen.query_one("#edit-turn-list").get_option_at_index(1).prompt).startswith(EDIT_MARK)

        # a turn without text cannot be edited
        editor_screen.query_one("#edit-turn-list").highlighted = 3  # the 'none' action
        await pilot.pause()
        assert editor_screen.query_one(TextArea).disabled
        await pilot.press("escape")
        await wait_until(pilot, lambda: pilot.app.screen is screen, what="the curation screen")
        await settled(pilot, screen)
        assert screen.stats.total.tokens == tokens_before


async def test_a_snapshot_is_made_from_the_selection_and_its_name_cannot_be_reused(store: Store, episodes: dict):
    async with make_app(store).run_test(size=SIZE) as pilot:
        screen = await open_curation(pilot)
        await pilot.press("slash", *"best-side", "enter")
        await settled(pilot, screen)
        selected = list(screen.view.selection.kept)

        await pilot.press("n")
        assert isinstance(pilot.app.screen, PromptScreen)
        await pilot.press(*"bad name!", "enter")
        assert "must be 1-64 letters" in static_text(pilot.app.screen, "#prompt-error")
        await pilot.press(*["backspace"] * 9, *"round-1", "tab", *"best side per scenario", "enter")
        await wait_until(pilot, lambda: len(list_snapshots(store)) == 1, what="the snapshot")
        [manifest] = list_snapshots(store)
        assert manifest.name == "round-1" and manifest.description == "best side per scenario"
        assert [(s.episode_id, s.side) for s in manifest.sides] == selected
        assert manifest.counts.total.examples == screen.stats.total.examples
        assert load_snapshot(store, "round-1").manifest.digest == manifest.digest

        await pilot.press("n", *"round-1", "enter")
        dialog = pilot.app.screen
        assert isinstance(dialog, PromptScreen)  # refused: the dialog stays open
        assert "already exists" in static_text(dialog, "#prompt-error")
        await pilot.press("escape")
        assert pilot.app.screen is screen
        assert [m.name for m in list_snapshots(store)] == ["round-1"]


async def test_an_empty_store_and_the_help_screen(store: Store):
    seed_profiles(store)
    async with make_app(store).run_test(size=SIZE) as pilot:
        screen = await open_curation(pilot)
        assert table_keys(screen) == []
        assert screen.stats.total.examples == 0
        await pilot.press("n")
        assert pilot.app.screen is screen  # nothing to snapshot: no dialog
        await pilot.press("f1")
        assert isinstance(pilot.app.screen, HelpScreen)
        keys = plain(pilot.app.screen.query_one("#help-keys", Static).content)
        for words in ("Curation (F6)", "Reject whole episode", "Remove filter", "Undo edit (restore original)"):
            assert words in keys
