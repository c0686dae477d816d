"""Defects a newcomer found in the TUI (issue 13), each driven with Pilot."""

from __future__ import annotations

import pytest

from sotopia_pi.config import Settings
from sotopia_pi.episode import EpisodeStatus
from sotopia_pi.store import Store
from tui.app import SotopiaApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.episode import EpisodeScreen
from tui.screens.library import LibraryScreen

from .factories import action, judge_answer, seed_store
from .tui_support import HeldBackend, factory_with, replay_settings, wait_until

SIZE = (120, 40)


# -- defect 3: a stop before any turn ------------------------------------------------------


async def stop_before_any_turn(store: Store, tmp_path):
    """Start an episode whose side 1 is caught generating turn 0, and press s."""
    seed_store(store)
    settings = replay_settings(tmp_path, side1=[], side2=[action("speak", "b0")], judge=[judge_answer()] * 3)
    held = HeldBackend([action("speak", "a0"), action("leave")])
    app = SotopiaApp(store, settings, backend_factory=factory_with({settings.agent1_model: held}), load_library=False)
    return app, held


@pytest.mark.parametrize("answer", ["n", "y"])
async def test_a_stop_before_any_turn_is_never_judged_and_is_kept_or_discarded(store: Store, tmp_path, answer):
    app, held = await stop_before_any_turn(store, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.selected is not None)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        screen = app.screen
        episode_id = screen.episode.id
        await wait_until(pilot, held.generating.is_set, what="turn 0 to be generating")
        await pilot.press("s")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="keep or discard")
        assert store.episode(episode_id).status == EpisodeStatus.paused  # not "finished"
        assert store.turns(episode_id) == [] and store.evaluations(episode_id) == []  # not judged
        assert store.episodes(status=EpisodeStatus.finished) == []  # so curation never sees it
        await pilot.press(answer)
        if answer == "y":
            await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen), what="back to the library")
            assert all(e.id != episode_id for e in store.episodes())
            return
        assert app.screen is screen and store.episode(episode_id).status == EpisodeStatus.paused
        held.release.set()
        await pilot.press("p")  # kept: it plays on from turn 0, and is judged once it has turns
        await wait_until(pilot, lambda: screen.episode.status == EpisodeStatus.finished and not screen.playing)
        turns = store.turns(episode_id)
        assert [t.argument for t in turns][:2] == ["a0", "b0"]
        assert store.terminal_evaluation(episode_id) is not None


# -- defect 4: who played a side -----------------------------------------------------------

NEVER_LOADED = "gguf:/nonexistent/model.gguf"


def person_played_a_model_side(store: Store) -> str:
    """The demo's finished episode, its side 2 set to a model that never loaded: a person
    played every turn of that side (as after a takeover at turn 0)."""
    from .tui_support import demo_episodes

    finished = demo_episodes(store)[0]
    episode = store.episode(finished)
    episode.agent_models = ["embedded", NEVER_LOADED]
    store.save_episode(episode)
    return finished


async def test_sides_a_person_played_are_shown_as_the_persons(store: Store):
    from textual.widgets import DataTable, Static

    from tui.screens.curation import CurationScreen
    from tui.screens.inspector import InspectorScreen, ReplayScreen

    from .test_tui import plain

    episode_id = person_played_a_model_side(store)
    app = SotopiaApp(store, Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        inspector = app.screen
        assert isinstance(inspector, InspectorScreen)
        table = inspector.query_one(DataTable)
        row = table.get_row(episode_id)
        assert (row[4], row[5]) == ("embedded", "person")
        assert NEVER_LOADED not in " ".join(table.get_row_at(i)[5] for i in range(table.row_count))

        table.move_cursor(row=table.get_row_index(episode_id))
        await pilot.press("o")
        assert isinstance(app.screen, ReplayScreen)
        header = plain(app.screen.query_one("#replay-header", Static))
        assert "Tomas Reyes (side 2): person" in header and NEVER_LOADED not in header
        await pilot.press("escape")

        app.open_episode(episode_id, autostart=False)
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        await pilot.pause()
        header = plain(app.screen.query_one("#episode-header", Static))
        assert "Tomas Reyes (side 2): YOU played it" in header and NEVER_LOADED not in header
        await pilot.press("escape")

        await pilot.press("f6")
        curation = app.screen
        assert isinstance(curation, CurationScreen)
        await wait_until(pilot, lambda: bool(curation.rows), what="the curation table")
        cells = {row.candidate.side: row.cells() for row in curation.rows if row.candidate.episode_id == episode_id}
        assert cells[1][4] == "person" and cells[0][5] == "person"
        assert NEVER_LOADED not in str(cells)


# -- defect 5: what the model wrote, beside how it was parsed ------------------------------


async def test_a_turn_saved_as_leaving_shows_what_the_model_wrote(store: Store, tmp_path):
    from tui.widgets.transcript import Transcript

    seed_store(store)
    goodbye = '{"action_type": "leave", "argument": "Fine, keep your bike then."}'
    settings = replay_settings(
        tmp_path, side1=[action("speak", "Two-fifty."), goodbye], side2=[action("none", "hmm, thinking")], judge=[judge_answer()]
    )
    settings.live_eval = False
    app = SotopiaApp(store, settings, load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.selected is not None)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        screen = app.screen
        await wait_until(pilot, lambda: screen.episode.status == EpisodeStatus.finished and not screen.playing)
        await pilot.pause()
        turns = store.turns(screen.episode.id)
        assert [t.action_type.value for t in turns] == ["speak", "none", "leave"]
        assert turns[2].argument == ""  # a leave carries no argument...
        transcript = screen.query_one(Transcript)
        leave = transcript.view(2).render().plain
        assert "[leaves]" in leave and "the model wrote: " + goodbye in leave  # ...but it was written
        assert "the model wrote" in transcript.view(1).render().plain
        assert "the model wrote" not in transcript.view(0).render().plain  # a speech shows itself


# -- defects 7 and 8: keys that mean one thing, no internal values on screen ---------------


async def test_f5_is_generate_on_every_screen_and_help_says_so(store: Store):
    from tui.screens.curation import CurationScreen
    from tui.screens.generate import GenerateScreen
    from tui.screens.help import HelpScreen
    from tui.screens.inspector import InspectorScreen

    seed_store(store)
    app = SotopiaApp(store, Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        for key, screen_type in (("f3", InspectorScreen), ("f6", CurationScreen)):
            await pilot.press(key)
            await wait_until(pilot, lambda screen_type=screen_type: isinstance(app.screen, screen_type))
            await pilot.press("f5")
            await wait_until(pilot, lambda: isinstance(app.screen, GenerateScreen), what=f"F5 from {key}")
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        f5 = [(title, b.description) for title, bindings in app.screen.sections for b in bindings if "f5" in b.key.split(",")]
        assert f5 == [("Everywhere", "Generate")]  # nothing else claims F5


async def test_f2_shows_the_library_not_the_last_finished_episode(store: Store, tmp_path):
    seed_store(store)
    settings = replay_settings(tmp_path, side1=[action("leave")], side2=[], judge=[], live_eval=False)
    settings.judge_model = ""
    app = SotopiaApp(store, settings, load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.selected is not None)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        screen = app.screen
        await wait_until(pilot, lambda: screen.finished and not screen.playing, what="the episode to end")
        await pilot.press("f3", "f2")
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen), what="the library")
        await pilot.press("f2")  # and from the library itself
        assert isinstance(app.screen, LibraryScreen)


async def test_library_search_and_lists_from_the_keyboard(store: Store):
    from textual.widgets import Input, OptionList, Static

    from sotopia_pi.profiles import Scenario

    from .test_tui import plain

    seed_store(store)
    store.save_scenario(
        Scenario(id="other", codename="lost_keys", scenario="Two neighbours search for keys.", agent_goals=["Find them", "Go home"])
    )
    app = SotopiaApp(store, Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        library = app.screen
        scenarios = library.query_one("#scenario-list", OptionList)
        search = library.query_one("#search", Input)
        await pilot.pause()
        assert scenarios.has_focus and search.value == ""  # / at launch searches, it is not typed
        first = library.selected.id
        await pilot.press("j")
        assert scenarios.highlighted == 1 and library.selected.id != first
        await pilot.press("k")
        assert scenarios.highlighted == 0 and library.selected.id == first

        await pilot.press("slash")
        assert search.has_focus and search.value == ""
        await pilot.press(*"zzz")
        await wait_until(pilot, lambda: scenarios.option_count == 0)
        assert "No scenario matches the search." in plain(library.query_one("#details", Static))
        await pilot.press("escape")
        assert scenarios.has_focus and isinstance(app.screen, LibraryScreen)

        await pilot.press("ctrl+t")  # the characters tab, with the search still matching nothing
        await pilot.pause()
        assert "No character matches the search." in plain(library.query_one("#details", Static))


def test_scenario_constraints_and_levels_are_said_in_words():
    from sotopia_pi.profiles import RelationshipLevel, Scenario
    from tui.screens.library import scenario_details

    scenario = Scenario(
        id="s", codename="meet", scenario="Two strangers meet.", agent_goals=["Talk", "Listen"],
        relationship=RelationshipLevel.stranger, age_constraint=[(18, 30), (50, 70)],
        occupation_constraint=[["nurse", "teacher"], []], agent_constraint=[["ines"], ["tomas", "mara"]],
    )
    text = scenario_details(scenario, {"ines": "Ines Varga", "tomas": "Tomas Reyes"}).plain
    assert "Relationship it needs: stranger\n" in text and "(0)" not in text
    assert "Ages: side 1 18–30; side 2 50–70" in text and "[(" not in text
    assert "Occupations: side 1 nurse or teacher; side 2 any" in text
    assert "Only these characters: side 1 Ines Varga; side 2 Tomas Reyes or mara" in text


def test_validation_errors_are_said_without_pydantic_internals():
    from pydantic import BaseModel, ValidationError

    from tui.errors import describe

    class Record(BaseModel):
        age: int
        name: str

    with pytest.raises(ValidationError) as caught:
        Record(age="old")  # type: ignore[arg-type]
    said = describe(caught.value)
    assert said.splitlines() == [
        "Not valid (2 problems):",
        "age: Input should be a valid integer, unable to parse string as an integer",
        "name: Field required",
    ]
    assert "input_value" not in said and "pydantic.dev" not in said and "Record" not in said


# -- defect 9: usable at 80x24 ---------------------------------------------------------------

SMALL = (80, 24)


def on_screen(app, widget) -> bool:
    """The whole widget lies inside the terminal and is not scrolled out of its container."""
    region = widget.region
    screen = app.screen.region
    return region.area > 0 and screen.contains_region(region)


async def test_every_part_a_person_needs_is_on_an_80x24_screen(store: Store):
    from textual.containers import VerticalScroll
    from textual.widgets import Button, Input

    from tui.screens.help import HelpScreen
    from tui.widgets.fkeys import FKeyBar
    from tui.widgets.transcript import Transcript

    from .tui_support import demo_episodes

    _, paused, _ = demo_episodes(store)
    app = SotopiaApp(store, Settings(), load_library=False)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        start = app.screen.query_one("#start", Button)
        assert on_screen(app, start)  # Start without scrolling
        bar = str(app.screen.query_one(FKeyBar).render())
        assert all(f"F{n}" in bar for n in range(1, 8))  # the F-keys are in sight

        app.open_episode(paused, autostart=False)
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        await pilot.pause()
        await pilot.pause()
        box = app.screen.query_one("#argument", Input)
        assert on_screen(app, box)  # the person sees what they type
        assert app.screen.query_one(Transcript).size.width >= 30  # a readable transcript
        await pilot.press("escape")

        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        scroll = app.screen.query_one("#help-box", VerticalScroll)
        assert scroll.max_scroll_y > 0  # more help than fits: it scrolls
        await pilot.press("pagedown")
        await wait_until(pilot, lambda: scroll.scroll_y > 0, what="the help to scroll")


# -- defect 6: a takeover in the middle of a model's turn ------------------------------------


class SlowToStop(HeldBackend):
    """A model that finishes its answer before it notices a cancel (a long prompt being read)."""

    def complete(self, messages, *, on_token=None, cancel=None, **options):
        self.generating.set()
        if on_token is not None:
            on_token('{"action_type": "speak", "argument": "Let me th')
        self.release.wait(10)
        self.generating.clear()
        return self._inner.complete(messages, on_token=on_token, cancel=cancel, **options)


async def test_taking_over_a_generating_side_says_its_model_is_being_stopped(store: Store, tmp_path):
    from textual.widgets import Label

    from tui.widgets.takeover import TakeoverPanel

    seed_store(store)
    settings = replay_settings(tmp_path, side1=[action("speak", "a0"), action("speak", "a1")], side2=[], judge=[], live_eval=False)
    settings.judge_model = ""
    slow = SlowToStop([action("speak", "b0")])
    app = SotopiaApp(store, settings, backend_factory=factory_with({settings.agent2_model: slow}), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.selected is not None)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        screen = app.screen
        await wait_until(pilot, slow.generating.is_set, what="side 2's model to generate")
        await pilot.press("2")
        status = screen.query_one("#takeover-status", Label)
        await wait_until(pilot, lambda: "Stopping the model's turn for Tomas Reyes" in str(status.render()))
        assert "Waiting for the other side" not in str(status.render())
        slow.release.set()
        panel = screen.query_one(TakeoverPanel)
        await wait_until(pilot, lambda: panel.your_turn, what="the person's move")
        await pilot.press("escape")


# -- missing: max turns and live scoring next to Start ---------------------------------------


async def test_max_turns_and_live_scoring_are_chosen_next_to_start(store: Store, tmp_path):
    from textual.widgets import Checkbox, Input

    seed_store(store)
    settings = replay_settings(tmp_path, side1=[action("speak", "a")] * 3, side2=[action("speak", "b")] * 3, judge=[judge_answer()])
    app = SotopiaApp(store, settings, load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        library = app.screen
        await wait_until(pilot, lambda: library.selected is not None)
        turns = library.query_one("#max-turns", Input)
        live = library.query_one("#live-eval", Checkbox)
        assert turns.value == str(settings.max_turns) and live.value == settings.live_eval  # the defaults
        turns.value = "0"
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, LibraryScreen) and store.episodes() == []  # refused, said
        assert turns.has_focus
        turns.value = "3"
        live.value = False
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        screen = app.screen
        assert (screen.episode.max_turns, screen.episode.live_eval) == (3, False)
        await wait_until(pilot, lambda: screen.finished and not screen.playing, what="three turns and the judge")
        assert len(store.turns(screen.episode.id)) == 3
        assert [e.kind for e in store.evaluations(screen.episode.id)] == ["terminal"]  # no live scores


# -- missing: copy keys ----------------------------------------------------------------------


async def test_copy_a_turn_a_reasoning_and_an_episode_id(store: Store):
    from tui.screens.inspector import ReplayScreen
    from tui.screens.reasoning import ReasoningScreen

    from .tui_support import demo_episodes

    finished = demo_episodes(store)[0]
    app = SotopiaApp(store, Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        await pilot.press("down", "down", "i")  # the inspector's selected row: the oldest, finished
        assert app.clipboard == finished
        await pilot.press("o")
        assert isinstance(app.screen, ReplayScreen)
        await pilot.press("down", "down", "down", "c")
        assert app.clipboard == "#3 Tomas Reyes (person) [speaks]: Two hundred, cash, right now."
        await pilot.press("t")
        assert isinstance(app.screen, ReasoningScreen)
        await pilot.press("c")
        assert "TERMINAL" in app.clipboard and "believability = 8" in app.clipboard
        await pilot.press("escape", "escape")

        app.open_episode(finished, autostart=False)
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        await pilot.pause()
        app.copy_to_clipboard("")
        await pilot.press("i")
        assert app.clipboard == finished
        await pilot.press("c")
        assert app.clipboard == "#4 Ines Varga [leaves]"


# -- missing: export from the TUI ------------------------------------------------------------


async def test_export_a_snapshot_from_curation_and_see_where_it_went(store: Store, isolated_home):
    import json

    from textual.widgets import Input, Select, Static

    from sotopia_pi.dataset.snapshots import create_snapshot
    from tui.screens.export import ExportScreen

    from .test_tui import plain
    from .tui_support import demo_episodes

    demo_episodes(store)
    manifest = create_snapshot(store, "round-1", []).manifest
    app = SotopiaApp(store, Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f6")
        await wait_until(pilot, lambda: bool(app.screen.rows), what="the curation table")
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ExportScreen))
        dialog = app.screen
        path_box = dialog.query_one("#export-path", Input)
        assert path_box.value == str(isolated_home / "exports" / "round-1.sft.jsonl")
        dialog.query_one("#export-format", Select).value = "chat"
        await pilot.pause()
        written = isolated_home / "exports" / "round-1.chat.jsonl"
        assert path_box.value == str(written)
        await pilot.press("enter")  # on the snapshot list: export it
        await wait_until(pilot, lambda: dialog.report is not None, what="the export")
        rows = [json.loads(line) for line in written.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == manifest.examples and all("messages" in row for row in rows)
        said = plain(dialog.query_one("#export-result", Static))
        assert f"{manifest.examples} examples" in said and str(written) in said.replace("\n", "")

        path_box.value = str(isolated_home)  # a folder: not a file to write
        await pilot.press("ctrl+e")
        await wait_until(pilot, lambda: "Not written" in plain(dialog.query_one("#export-result", Static)))
        await pilot.press("escape")
        assert not isinstance(app.screen, ExportScreen)
