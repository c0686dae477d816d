"""The TUI driven headless with Pilot: library -> live episode -> takeover -> inspector."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.text import Text
from textual.widgets import DataTable, Input, OptionList, Select, Static

from sotopia_pi import config
from sotopia_pi.backends import preset_for
from sotopia_pi.episode import ActionType, EpisodeStatus
from sotopia_pi.store import Store
from tui.app import SotopiaApp, make_app
from tui.screens.episode import EpisodeScreen
from tui.screens.help import HelpScreen
from tui.screens.inspector import InspectorScreen, ReplayScreen
from tui.screens.library import LibraryScreen
from tui.screens.reasoning import ReasoningScreen
from tui.screens.settings import SettingsScreen
from tui.widgets.scores import ScorePanel
from tui.widgets.takeover import TakeoverPanel
from tui.widgets.transcript import Transcript

from .factories import GOOD_SCORES, action, judge_answer, seed_store
from .tui_support import HeldBackend, factory_with, replay_settings, wait_until

SIZE = (120, 40)


def plain(widget) -> str:
    """The text a widget shows, whatever it was given (str, Text or a Rich renderable)."""
    content = widget.content if isinstance(widget, Static) else widget.render()
    if isinstance(content, str):
        return content
    if isinstance(content, Text):
        return content.plain
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(content)
    return console.export_text()


def live_screen(app: SotopiaApp) -> EpisodeScreen:
    assert isinstance(app.screen, EpisodeScreen), type(app.screen)
    return app.screen


async def test_whole_flow_takeover_hand_back_then_find_it_in_the_inspector(store: Store, tmp_path):
    seed_store(store)
    settings = replay_settings(
        tmp_path,
        side1=[action("speak", "Two-fifty, firm."), action("speak", "Fine, 230."), action("leave")],
        side2=[],  # side 2 is the held model below
        judge=[judge_answer(), judge_answer()],
        live_eval=False,
    )
    held = HeldBackend([action("speak", "Deal at 230.")], name="held-model")
    app = SotopiaApp(
        store, settings, backend_factory=factory_with({settings.agent2_model: held}), load_library=False
    )
    async with app.run_test(size=SIZE) as pilot:
        library = app.screen
        assert isinstance(library, LibraryScreen)
        await wait_until(pilot, lambda: library.selected is not None, what="a scenario to be selected")
        assert library.selected.id == "bike-sale"
        assert library.query_one("#character1", Select).value == "ines"
        assert library.query_one("#character2", Select).value == "tomas"

        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen), what="the live screen")
        screen = live_screen(app)
        header = plain(screen.query_one("#episode-header", Static))
        assert f"Ines Varga (side 1): {settings.agent1_model}" in header
        assert f"judge: {settings.judge_model}" in header

        # side 2's model is generating turn 1: its partial argument is on screen
        await wait_until(pilot, held.generating.is_set, what="side 2 to start generating")
        await wait_until(pilot, lambda: "Let me th" in screen.query_one(Transcript).last_text(), what="streamed text")

        await pilot.press("2")  # take over Tomas mid-generation
        panel = screen.query_one(TakeoverPanel)
        await wait_until(pilot, lambda: panel.your_turn, what="the person's turn")
        assert held.cancelled == 1
        context = plain(screen.query_one("#takeover-context", Static))
        assert "Buy the bike for at most $200" in context  # Tomas's own goal
        assert "Sell the bike" not in context  # never the other side's goal
        assert "He already bought a car" in context  # his own secret
        assert "YOU" in plain(screen.query_one("#episode-header", Static))

        await pilot.press(*"How about 200?", "enter")
        await wait_until(pilot, lambda: len(store.turns(screen.episode.id)) >= 2, what="the person's turn to commit")
        # Tomas's next move is the person's again, so the text box has the focus: ^b works there
        await wait_until(pilot, lambda: panel.your_turn and len(store.turns(screen.episode.id)) == 3)
        assert isinstance(app.focused, Input)
        await pilot.press("ctrl+b")  # hand Tomas back to his model
        held.release.set()
        await wait_until(pilot, lambda: screen.episode.status == EpisodeStatus.finished, what="the episode to end")
        await wait_until(pilot, lambda: not screen.playing, what="the terminal evaluation")
        await pilot.pause()

        turns = store.turns(screen.episode.id)
        assert [(t.agent, t.by_human, t.action_type) for t in turns] == [
            (0, False, ActionType.speak),
            (1, True, ActionType.speak),
            (0, False, ActionType.speak),
            (1, False, ActionType.speak),
            (0, False, ActionType.leave),
        ]
        assert turns[1].argument == "How about 200?"
        assert turns[3].argument == "Deal at 230."
        scores = screen.query_one(ScorePanel)
        assert scores.evaluation is not None and scores.evaluation.kind == "terminal"
        assert "TERMINAL" in scores.text()

        await pilot.press("r")
        assert isinstance(app.screen, ReasoningScreen)
        assert "because goal" in plain(app.screen.query_one("#reasoning", Static))
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, LibraryScreen)

        await pilot.press("f3")
        inspector = app.screen
        assert isinstance(inspector, InspectorScreen)
        table = inspector.query_one(DataTable)
        assert table.row_count == 1
        row = table.get_row_at(0)
        overall = f"{sum(GOOD_SCORES.values()) / 7:.2f}"
        assert row[1] == "bike_sale" and row[2] == "finished" and row[6] == overall and row[7] == overall

        await pilot.press("o")
        replay = app.screen
        assert isinstance(replay, ReplayScreen)
        await pilot.press("down")
        info = plain(replay.query_one("#turn-info", Static))
        assert "How about 200?" in info and "played by a person" in info
        prompt = plain(replay.query_one("#turn-prompt", Static))
        assert "Buy the bike for at most $200" in prompt and "Sell the bike" not in prompt
        await pilot.press("t")
        assert isinstance(app.screen, ReasoningScreen)


async def test_a_failing_model_pauses_the_episode_and_keeps_what_was_played(store: Store, tmp_path):
    seed_store(store)
    settings = replay_settings(
        tmp_path,
        side1=[action("speak", "Hello."), action("speak", "Still here?")],
        side2=[action("speak", "Hi.")],  # runs out on its second turn: the "server" is gone
        judge=[],
        live_eval=False,
    )
    app = SotopiaApp(store, settings, load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.selected is not None)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        screen = live_screen(app)
        await wait_until(pilot, lambda: screen.episode.status == EpisodeStatus.paused and not screen.playing)
        banner = plain(screen.query_one("#episode-banner", Static))
        assert "no more canned outputs" in banner
        assert "every turn played so far is saved" in banner
        assert [t.argument for t in store.turns(screen.episode.id)] == ["Hello.", "Hi.", "Still here?"]
        assert store.episode(screen.episode.id).last_error
        # the app is still alive and navigable
        await pilot.press("escape", "f3")
        assert isinstance(app.screen, InspectorScreen)
        assert app.screen.query_one(DataTable).get_row_at(0)[2] == "paused (error)"


async def test_play_a_character_from_the_start_against_a_model(store: Store, tmp_path):
    seed_store(store)
    settings = replay_settings(
        tmp_path, side1=[], side2=[action("leave")], judge=[judge_answer(), judge_answer()], live_eval=False
    )
    app = SotopiaApp(store, settings, load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        library = app.screen
        await wait_until(pilot, lambda: library.selected is not None)
        library.query_one("#model1", Select).value = "human"
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        screen = live_screen(app)
        panel = screen.query_one(TakeoverPanel)
        await wait_until(pilot, lambda: panel.your_turn, what="the first move to be the person's")
        context = plain(screen.query_one("#takeover-context", Static))
        assert context.startswith("Your goal: Sell the bike for at least $250")
        assert "Buy the bike" not in context and "He already bought a car" not in context
        assert screen.episode.agent_models[0] == "human"

        # an empty speech is refused with a message, nothing is sent
        await pilot.press("enter")
        assert "Type what you want to say" in plain(panel.query_one("#takeover-status"))
        await pilot.press(*"Two-fifty and it is yours.", "enter")
        await wait_until(pilot, lambda: screen.episode.status == EpisodeStatus.finished and not screen.playing)
        turns = store.turns(screen.episode.id)
        assert [(t.by_human, t.argument) for t in turns] == [(True, "Two-fifty and it is yours."), (False, "")]
        await pilot.press("h")  # nothing to hand back to: a message, not a crash
        assert isinstance(app.screen, EpisodeScreen)


async def test_pause_step_and_stop(store: Store, tmp_path):
    seed_store(store)
    settings = replay_settings(
        tmp_path,
        side1=[action("speak", f"a{i}") for i in range(5)],
        side2=[],
        judge=[judge_answer(), judge_answer()],
        live_eval=False,
    )
    held = HeldBackend([action("speak", f"b{i}") for i in range(5)])
    app = SotopiaApp(store, settings, backend_factory=factory_with({settings.agent2_model: held}), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.selected is not None)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        screen = live_screen(app)
        await wait_until(pilot, held.generating.is_set)
        await pilot.press("p")
        assert "pausing after this turn" in plain(screen.query_one("#episode-header", Static))
        held.release.set()
        await wait_until(pilot, lambda: not screen.playing)
        assert screen.episode.status == EpisodeStatus.paused
        assert len(store.turns(screen.episode.id)) == 2

        await pilot.press("n")
        await wait_until(pilot, lambda: len(store.turns(screen.episode.id)) == 3 and not screen.playing)
        assert screen.episode.status == EpisodeStatus.paused

        await pilot.press("s")
        await wait_until(pilot, lambda: screen.episode.status == EpisodeStatus.finished and not screen.playing)
        assert screen.episode.end_reason == "stopped by the user"
        assert store.terminal_evaluation(screen.episode.id) is not None
        assert len(store.turns(screen.episode.id)) == 3


async def test_resume_an_unfinished_episode_from_the_inspector(store: Store, tmp_path):
    seed_store(store)
    settings = replay_settings(
        tmp_path,
        side1=[action("speak", "One."), action("leave")],
        side2=[],
        judge=[],
        live_eval=False,
    )
    settings.judge_model = ""
    held = HeldBackend([action("speak", "Two."), action("speak", "Three.")])
    app = SotopiaApp(store, settings, backend_factory=factory_with({settings.agent2_model: held}), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.selected is not None)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        episode_id = app.screen.episode.id
        await wait_until(pilot, held.generating.is_set)
        await pilot.press("escape")  # leave mid-turn: the episode pauses at once
        await wait_until(pilot, lambda: store.episode(episode_id).status == EpisodeStatus.paused)
        assert held.cancelled == 1  # the turn in progress was dropped; it is played on resume
        assert len(store.turns(episode_id)) == 1
        await wait_until(pilot, lambda: episode_id not in app.busy_episodes, what="the models to be freed")
        held.release.set()

        await pilot.press("f3")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen), what="the resumed episode")
        screen = live_screen(app)
        assert screen.episode.id == episode_id
        await wait_until(pilot, lambda: screen.episode.status == EpisodeStatus.finished and not screen.playing)
        # the resumed runner reads side 1's replay file afresh: "One." again, then "leave"
        assert [t.argument for t in store.turns(episode_id)] == ["One.", "Two.", "One.", "Three.", ""]


async def test_inspector_filters(store: Store):
    from .test_episode_list import fill

    fill(store)
    app = SotopiaApp(store, config.Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        inspector = app.screen
        table = inspector.query_one(DataTable)
        assert table.row_count == 3
        inspector.query_one("#filter-model", Input).value = "qwen"
        await wait_until(pilot, lambda: table.row_count == 1, what="the model filter")
        assert table.get_row_at(0)[4].startswith("openai:qwen")
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: table.row_count == 3)
        inspector.query_one("#filter-score", Input).value = "3"
        await wait_until(pilot, lambda: table.row_count == 1, what="the score filter")
        assert "1 episodes" in plain(inspector.query_one("#episode-count"))


async def test_settings_are_saved_and_bad_values_are_refused(store: Store):
    app = SotopiaApp(store, config.Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        screen = app.screen
        assert isinstance(screen, SettingsScreen)
        screen.query_one("#setting-max_turns", Input).value = "0"
        await pilot.press("ctrl+s")
        assert "max_turns" in plain(screen.query_one("#settings-error", Static))
        assert not config.config_path().exists()

        screen.query_one("#setting-max_turns", Input).value = "6"
        screen.query_one("#preset-kind", Select).value = "openai"
        screen.query_one("#preset-name", Input).value = "local server"
        screen.query_one("#preset-target", Input).value = "qwen@http://127.0.0.1:8000/v1"
        await pilot.click("#preset-add")
        await pilot.press("ctrl+s")
        saved = config.load()
        assert saved.max_turns == 6
        assert [p.model for p in saved.presets] == ["embedded", "openai:qwen@http://127.0.0.1:8000/v1"]
        assert app.settings.max_turns == 6

        await pilot.press("f2")  # the library offers the new preset
        options = [str(label) for label, _ in app.screen.query_one("#model1", Select)._options]
        assert "local server" in options


async def test_a_bad_config_file_is_reported_and_the_app_still_opens(store: Store):
    config.config_path().write_text("live_eval = true\nmax_turns = = 3\n", encoding="utf-8")
    app = make_app(store=store, load_library=False)
    assert app.settings.max_turns == 20
    assert "config.toml" in app.startup_errors[0] and "line" in app.startup_errors[0]
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, LibraryScreen)
        assert any("config.toml" in n.message for n in app._notifications)


async def test_every_screen_is_reachable_from_the_keyboard_and_help_lists_the_keys(store: Store):
    seed_store(store)
    app = SotopiaApp(store, config.Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        for key, screen_type in (("f3", InspectorScreen), ("f4", SettingsScreen), ("f2", LibraryScreen)):
            await pilot.press(key)
            assert isinstance(app.screen, screen_type)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        keys = plain(app.screen.query_one("#help-keys", Static))
        for description in ("Play a side", "Hand back", "Pause/resume", "Start episode", "Resume", "Save"):
            assert description in keys
        await pilot.press("escape")
        await pilot.press("ctrl+t")
        assert app.screen.query_one("#character-list", OptionList).has_focus
        await pilot.press("down")
        assert "She is closing the stall" in plain(app.screen.query_one("#details", Static))


async def test_search_narrows_the_library(store: Store):
    seed_store(store)
    from sotopia_pi.profiles import Scenario

    store.save_scenario(
        Scenario(id="other", codename="lost_keys", scenario="Two neighbours search for keys.", agent_goals=["Find them", "Go home"])
    )
    app = SotopiaApp(store, config.Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        scenarios = app.screen.query_one("#scenario-list", OptionList)
        assert scenarios.option_count == 2
        scenarios.focus()
        await pilot.press("slash")
        assert app.screen.query_one("#search", Input).has_focus
        await pilot.press(*"keys")
        await wait_until(pilot, lambda: scenarios.option_count == 1)
        assert scenarios.get_option_at_index(0).id == "other"
        # no pair of characters fits it (no one is a stranger to anyone): said plainly
        await pilot.press("enter")
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, LibraryScreen)
        pairs = app.screen.query_one("#pair-list", OptionList)
        assert "No two characters have the relationship" in str(pairs.get_option_at_index(0).prompt)


@pytest.mark.slow
async def test_embedded_model_episode_with_takeover(store: Store):
    """The real embedded model plays; the person takes over side 1 while its model generates
    the first move, takes side 2 as well, plays a move for each, then hands both back and the
    models finish the episode. (Taking both before the first move is committed keeps a small
    model that leaves at once, or answers fast, from ending or passing a turn before the person
    gets it.)"""
    seed_store(store)
    settings = config.Settings(max_turns=4, live_eval=False, judge_model="embedded")
    app = SotopiaApp(store, settings, load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.selected is not None)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        screen = live_screen(app)
        panel = screen.query_one(TakeoverPanel)
        episode_id = screen.episode.id
        # a loaded 2-core machine makes the small model slow: the waits are generous
        await pilot.press("1")
        await wait_until(pilot, lambda: panel.your_turn and panel.side == 0, timeout=300, what="side 1's move")
        await pilot.press("escape", "2")  # leave the text box, then take side 2 as well
        assert 1 in screen.person_sides and panel.side == 0  # the move owed comes first
        await pilot.press(*"Is the bike still for sale?", "enter")
        await wait_until(pilot, lambda: panel.your_turn and panel.side == 1, timeout=60, what="side 2's move")
        await pilot.press(*"I can pay 200.", "enter")
        await wait_until(pilot, lambda: len(store.turns(episode_id)) >= 2, timeout=30)
        # ^b hands back the side the panel shows: wait until it shows the move owed next (side 1's)
        await wait_until(pilot, lambda: panel.your_turn and panel.side == 0, timeout=60, what="side 1's move again")
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: not screen.runner.is_human(0), timeout=60, what="side 1 handed back")
        # side 1's model plays turn 2; it may leave, which ends the episode before side 2 is owed
        await wait_until(pilot, lambda: (panel.display and panel.side == 1) or screen.finished, timeout=120, what="turn 2")
        if not screen.finished:
            await pilot.press("ctrl+b")  # then side 2
            await wait_until(pilot, lambda: not screen.runner.is_human(1), timeout=60, what="side 2 handed back")
        await wait_until(pilot, lambda: screen.finished and not screen.playing, timeout=700, what="the end")
        turns = store.turns(episode_id)
        assert [(t.by_human, t.argument) for t in turns[:2]] == [
            (True, "Is the bike still for sale?"),
            (True, "I can pay 200."),
        ]
        played_by = [preset_for("embedded")] * 2
        assert store.episode(episode_id).agent_models == played_by  # `embedded` written out
        assert len(turns) >= 3 and all(not t.by_human and t.model == played_by[0] for t in turns[2:])
        assert len(turns) == 4 or turns[-1].action_type == ActionType.leave
        terminal = store.terminal_evaluation(episode_id)
        assert terminal is not None and terminal.judge_model.startswith(preset_for("embedded", "judge"))
        await pilot.press("escape", "f3")
        table = app.screen.query_one(DataTable)
        assert table.row_count == 1 and table.get_row_at(0)[2] == "finished"
        scored = [cell for cell in table.get_row_at(0)[6:8] if cell != "-"]
        assert scored or not terminal.ok  # scores are listed, or the judge's failure is recorded


async def test_a_scenario_that_fails_validation_is_reported_not_fatal(store: Store):
    seed_store(store)
    with store.transaction() as conn:  # a record edited by hand into something invalid
        conn.execute("UPDATE scenarios SET data = json_set(data, '$.agent_goals', json('[\"only one\"]'))")
    app = SotopiaApp(store, config.Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, LibraryScreen)
        details = plain(app.screen.query_one("#details", Static))
        assert "could not be read" in details and "agent_goals" in details
        await pilot.press("ctrl+r")  # nothing to start, and no crash
        assert isinstance(app.screen, LibraryScreen)
        await pilot.press("f3")
        assert isinstance(app.screen, InspectorScreen)


async def test_pulled_catalog_models_are_offered(store: Store, isolated_home):
    seed_store(store)
    from sotopia_pi import paths
    from sotopia_pi.catalog import load_catalog

    entry = next(e for e in load_catalog().models.values() if e.kind == "gguf")
    (paths.models_dir() / entry.filename).write_bytes(b"GGUF")
    app = SotopiaApp(store, config.Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        values = [value for _, value in app.screen.query_one("#model1", Select)._options]
        assert f"catalog:{entry.name}" in values
        assert "embedded" in values and "human" in values


async def test_an_episode_open_in_one_place_cannot_be_resumed_in_another(store: Store, tmp_path):
    seed_store(store)
    settings = replay_settings(tmp_path, side1=[action("speak", "Hi.")], side2=[], judge=[], live_eval=False)
    settings.judge_model = ""
    held = HeldBackend([action("speak", "Hello.")])
    app = SotopiaApp(store, settings, backend_factory=factory_with({settings.agent2_model: held}), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.selected is not None)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        episode_id = app.screen.episode.id
        await wait_until(pilot, held.generating.is_set)
        await pilot.press("f3")  # the episode keeps playing on the library's stack
        assert store.episode(episode_id).status == EpisodeStatus.running
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, InspectorScreen)  # refused: a second runner would clash
        assert episode_id in app.busy_episodes
        held.release.set()


async def test_quitting_pauses_a_running_episode_first(store: Store, tmp_path):
    seed_store(store)
    settings = replay_settings(tmp_path, side1=[action("speak", "Hi.")], side2=[], judge=[], live_eval=False)
    held = HeldBackend([action("speak", "Hello.")])
    app = SotopiaApp(store, settings, backend_factory=factory_with({settings.agent2_model: held}), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.selected is not None)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        episode_id = app.screen.episode.id
        await wait_until(pilot, held.generating.is_set)
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: app.return_code is not None, what="the app to quit once the model call returned")
    assert held.cancelled == 1  # the turn in progress was abandoned, not waited for
    assert store.episode(episode_id).status == EpisodeStatus.paused
    assert [t.argument for t in store.turns(episode_id)] == ["Hi."]
