"""Snapshots of the main screens at 120x40 on fixed data. Review changes with
`pytest tests/test_tui_snapshots.py --snapshot-update` and look at the SVGs before accepting."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Select, TextArea

from sotopia_pi.config import Settings
from sotopia_pi.store import Store
from tui.app import SotopiaApp

from .tui_support import demo_episodes

SIZE = (120, 40)
FINISHED, PAUSED, FAILED = "01EPISODEFINISHED000000000", "01EPISODEPAUSED00000000000", "01EPISODEERROR000000000000"


@pytest.fixture
def demo_app(store: Store) -> SotopiaApp:
    demo_episodes(store)
    return SotopiaApp(store, Settings(), load_library=False)


async def settle(pilot) -> None:
    for box in pilot.app.screen.query(Input):
        box.cursor_blink = False
    await pilot.pause()
    await pilot.pause()


def test_library(snap_compare, demo_app):
    async def run_before(pilot):
        await settle(pilot)

    assert snap_compare(demo_app, terminal_size=SIZE, run_before=run_before)


def test_live_episode_finished_with_terminal_scores(snap_compare, demo_app):
    async def run_before(pilot):
        pilot.app.open_episode(FINISHED, autostart=False)
        await settle(pilot)

    assert snap_compare(demo_app, terminal_size=SIZE, run_before=run_before)


def test_live_episode_person_plays_side_one(snap_compare, demo_app):
    async def run_before(pilot):
        pilot.app.open_episode(PAUSED, autostart=False)
        await settle(pilot)

    assert snap_compare(demo_app, terminal_size=SIZE, run_before=run_before)


def test_inspector(snap_compare, demo_app):
    async def run_before(pilot):
        await pilot.press("f3")
        await settle(pilot)

    assert snap_compare(demo_app, terminal_size=SIZE, run_before=run_before)


def test_replay_of_one_episode(snap_compare, demo_app):
    async def run_before(pilot):
        await pilot.press("f3", "down", "down", "o", "down", "down")
        await settle(pilot)

    assert snap_compare(demo_app, terminal_size=SIZE, run_before=run_before)


def test_scenario_editor_shows_problems_under_their_fields(snap_compare, demo_app):
    async def run_before(pilot):
        await pilot.press("ctrl+n")
        await pilot.pause()
        form = pilot.app.screen.query_one("ScenarioForm")
        form.query_one("#form-codename", Input).value = "Parking Space"
        form.query_one("#form-category", Select).value = "negotiation"
        form.query_one("#form-relationship", Select).value = "friend"
        form.query_one("#form-scenario", TextArea).text = "Two neighbours share one parking space and both need it on Saturday morning."
        form.query_one("#form-goal-0", TextArea).text = "Keep the space, because he has a piano to move."
        form.query_one("#form-goal-1", TextArea).text = "Get it."
        for area in form.query(TextArea):
            area.cursor_blink = False
        await settle(pilot)

    assert snap_compare(demo_app, terminal_size=SIZE, run_before=run_before)


# -- every main screen at 80x24 (issue 13, defect 9) -----------------------------------------

SMALL = (80, 24)


def test_small_library(snap_compare, demo_app):
    async def run_before(pilot):
        await settle(pilot)

    assert snap_compare(demo_app, terminal_size=SMALL, run_before=run_before)


def test_small_live_episode_person_plays_side_one(snap_compare, demo_app):
    async def run_before(pilot):
        pilot.app.open_episode(PAUSED, autostart=False)
        await settle(pilot)

    assert snap_compare(demo_app, terminal_size=SMALL, run_before=run_before)


def test_small_live_episode_finished(snap_compare, demo_app):
    async def run_before(pilot):
        pilot.app.open_episode(FINISHED, autostart=False)
        await settle(pilot)

    assert snap_compare(demo_app, terminal_size=SMALL, run_before=run_before)


@pytest.mark.parametrize("key", ["f3", "f4", "f5", "f6", "f7", "f1"])
def test_small_screen_behind_a_key(snap_compare, demo_app, key, monkeypatch):
    from pathlib import Path

    from sotopia_pi import config

    # the settings screen names its config file: the same on every run
    monkeypatch.setattr(config, "config_path", lambda: Path("/home/you/.config/sotopia-pi/config.toml"))

    async def run_before(pilot):
        await pilot.press(key)
        await settle(pilot)

    assert snap_compare(demo_app, terminal_size=SMALL, run_before=run_before)


def test_small_replay_of_one_episode(snap_compare, demo_app):
    async def run_before(pilot):
        await pilot.press("f3", "down", "down", "o", "down", "down")
        await settle(pilot)

    assert snap_compare(demo_app, terminal_size=SMALL, run_before=run_before)
