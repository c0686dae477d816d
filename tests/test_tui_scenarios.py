"""Writing, editing and generating scenarios in the TUI, driven headless with Pilot."""

from __future__ import annotations

import json
import tomllib

import pytest
from textual.widgets import Button, Input, OptionList, RichLog, Select, TextArea

from sotopia_pi.config import Settings
from sotopia_pi.library import AUTHORED_SOURCE, load_library, scenario_from_dict
from sotopia_pi.library.generate import GENERATED_SOURCE, used_seeds
from sotopia_pi.profiles import RelationshipLevel, valid_pairs
from sotopia_pi.store import Store
from tui.app import SotopiaApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.generate import GenerateScreen
from tui.screens.library import LibraryScreen
from tui.screens.prompt import PromptScreen
from tui.screens.scenario_editor import ScenarioEditorScreen
from tui.widgets.scenario_form import ScenarioForm, parse_age_constraint, parse_name_lists

from .test_tui import plain
from .tui_support import replay_file, wait_until

SIZE = (120, 40)

CONTEXT = "Two neighbours share one parking space behind their building, and both need it on the same Saturday morning."
GOAL_1 = "Keep the space on Saturday, because you are moving a heavy piano and the van has to stand close to the door."
GOAL_2 = "Get the space on Saturday, because a relative with a bad hip is visiting and cannot walk from the street."


def log_text(screen: GenerateScreen) -> str:
    """The attempts log as one line (the log wraps at word boundaries)."""
    return " ".join(" ".join(line.text for line in screen.query_one("#generate-log", RichLog).lines).split())


def app_for(store: Store, **settings) -> SotopiaApp:
    return SotopiaApp(store, Settings(**settings))


def form_of(app: SotopiaApp) -> ScenarioForm:
    return app.screen.query_one(ScenarioForm)


def error_text(form: ScenarioForm, line: str) -> str:
    return plain(form.query_one(f"#error-{line}"))


async def fill(pilot, form: ScenarioForm, *, codename="parking_space_saturday", category="negotiation", level="acquaintance",
               context=CONTEXT, goals=(GOAL_1, GOAL_2)) -> None:
    form.query_one("#form-codename", Input).value = codename
    form.query_one("#form-category", Select).value = category
    form.query_one("#form-relationship", Select).value = level
    form.query_one("#form-scenario", TextArea).text = context
    for side, goal in enumerate(goals):
        form.query_one(f"#form-goal-{side}", TextArea).text = goal
    await pilot.pause()


def test_constraint_text_parses_both_sides_and_refuses_what_it_cannot_read():
    assert parse_age_constraint("20-40; 30 to 70") == [[20, 40], [30, 70]]
    assert parse_age_constraint("  ") is None
    with pytest.raises(ValueError, match="side 1, a ';', then side 2"):
        parse_age_constraint("20-40")
    with pytest.raises(ValueError, match="not an age range"):
        parse_age_constraint("20-40; old")
    assert parse_name_lists("nurse, doctor; ") == [["nurse", "doctor"], []]


async def test_write_a_new_scenario_with_errors_shown_as_you_type_then_save_and_export(store: Store, tmp_path):
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, LibraryScreen)
        before = len(store.scenarios())
        await pilot.press("ctrl+n")
        assert isinstance(app.screen, ScenarioEditorScreen)
        form = form_of(app)
        assert "problems to fix" in plain(form.query_one("#form-summary"))
        assert error_text(form, "category") == ""  # nothing typed yet: no red under each field
        await pilot.press("ctrl+s")  # until a refused save points at everything
        assert "must be one of" in error_text(form, "category")
        await fill(pilot, form, goals=(GOAL_1, "Get it."))
        assert "too short to act on" in error_text(form, "goal-1")
        assert error_text(form, "goal-0") == ""
        assert app.screen.query_one("#editor-save", Button).disabled
        await pilot.press("ctrl+s")  # refused while wrong
        assert isinstance(app.screen, ScenarioEditorScreen) and len(store.scenarios()) == before

        form.query_one("#form-goal-1", TextArea).text = "She wants the space."
        await pilot.pause()
        assert "must be gender-neutral" in error_text(form, "goal-1")
        form.query_one("#form-goal-1", TextArea).text = GOAL_2
        form.query_one("#form-ages", Input).value = "30-50"
        await pilot.pause()
        assert "side 1, a ';', then side 2" in error_text(form, "ages")
        form.query_one("#form-ages", Input).value = "18-70; 18-70"
        form.query_one("#form-codename", Input).value = "used_cargo_bike"  # a library scenario's
        await pilot.pause()
        assert "is taken by another scenario" in error_text(form, "codename")
        form.query_one("#form-codename", Input).value = "parking_space_saturday"
        await pilot.pause()
        assert form.errors == []
        assert "Ready to save" in plain(form.query_one("#form-summary"))
        assert not app.screen.query_one("#editor-save", Button).disabled

        await pilot.press("ctrl+l")  # export before saving: a library file
        assert isinstance(app.screen, PromptScreen)
        app.screen.query_one("#prompt-folder", Input).value = str(tmp_path / "export")
        await pilot.press("enter")
        written = tmp_path / "export" / "scenarios" / "parking_space_saturday.toml"
        await wait_until(pilot, written.exists, what="the exported file")
        exported = scenario_from_dict(tomllib.loads(written.read_text(encoding="utf-8")))
        assert exported.agent_goals == [GOAL_1, GOAL_2]

        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen), what="back in the library")
        saved = [s for s in store.scenarios() if s.codename == "parking_space_saturday"]
        assert len(saved) == 1 and saved[0].source == AUTHORED_SOURCE
        assert saved[0].relationship == RelationshipLevel.acquaintance
        assert saved[0].age_constraint == [(18, 70), (18, 70)]
        pairings = store.pairings(saved[0].id)
        allowed = set(valid_pairs(saved[0], {c.id: c for c in store.characters()}, store.relationships()))
        assert pairings and all(tuple(p.agent_ids) in allowed for p in pairings)
        assert app.screen.selected is not None and app.screen.selected.id == saved[0].id  # shown at once


async def test_editing_a_library_scenario_saves_a_copy_and_closing_asks_before_discarding(store: Store):
    app = app_for(store)
    async with app.run_test(size=SIZE) as pilot:
        library_screen = app.screen
        original = store.scenario("used_cargo_bike")
        library_screen.selected = original
        library_screen.fill_lists()
        await pilot.pause()
        await pilot.press("ctrl+o")
        assert isinstance(app.screen, ScenarioEditorScreen) and app.screen.is_copy
        form = form_of(app)
        assert form.query_one("#form-codename", Input).value == "used_cargo_bike_2"
        assert form.query_one("#form-goal-0", TextArea).text == original.agent_goals[0]
        await pilot.press("escape")  # nothing changed: closes at once
        assert isinstance(app.screen, LibraryScreen)

        await pilot.press("ctrl+o")
        form = form_of(app)
        form.query_one("#form-goal-0", TextArea).text = original.agent_goals[0] + " Keep it friendly."
        await pilot.pause()
        await pilot.press("escape")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # keep editing
        assert isinstance(app.screen, ScenarioEditorScreen)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen), what="saved")
        copy = store.scenario(app.screen.selected.id)
        assert copy.id != original.id and copy.codename == "used_cargo_bike_2"
        assert copy.agent_goals[0].endswith("Keep it friendly.")
        assert store.scenario(original.id) == original  # the library's record is untouched


def generation_answer(context: str = CONTEXT, goals=(GOAL_1, GOAL_2), title: str = "parking_space_saturday") -> str:
    return json.dumps({"context": context, "goals": list(goals), "relationship": "acquaintance", "title": title, "type": "negotiation"})


async def open_generate(pilot, app: SotopiaApp) -> GenerateScreen:
    await pilot.press("f5")
    await wait_until(pilot, lambda: isinstance(app.screen, GenerateScreen), what="the generation screen")
    return app.screen


async def test_generate_preview_edit_and_save_marks_the_seed_used(store: Store, tmp_path):
    model = replay_file(tmp_path, "writer", ['{"context": "cut off', generation_answer()])
    app = app_for(store, judge_model=model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_generate(pilot, app)
        seeds = load_library().seed_prompts
        assert screen.seeds == seeds
        assert screen.query_one("#generate-model", Select).value == model
        screen.query_one("#seed-list", OptionList).highlighted = 3
        await pilot.press("ctrl+g")
        form = screen.query_one(ScenarioForm)
        await wait_until(pilot, lambda: screen.proposal is not None, what="a proposal")
        log = log_text(screen)
        assert "rejected: invalid: not valid JSON" in log and "accepted" in log
        assert form.display and form.query_one("#form-codename", Input).value == "parking_space_saturday"
        assert seeds[3] in plain(screen.query_one("#generate-origin"))
        assert used_seeds(store) == {}  # a preview stores nothing

        form.query_one("#form-goal-1", TextArea).text = "Too short."
        await pilot.pause()
        assert screen.query_one("#generate-save", Button).disabled
        form.query_one("#form-goal-1", TextArea).text = GOAL_2 + " You can offer to help carry the piano."
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: screen.proposal is None, what="saved")
        stored = [s for s in store.scenarios() if s.codename == "parking_space_saturday"]
        assert len(stored) == 1 and stored[0].source == GENERATED_SOURCE
        assert stored[0].agent_goals[1].endswith("help carry the piano.")
        assert used_seeds(store)[seeds[3]]["scenario_id"] == stored[0].id
        assert seeds[3] not in screen.seeds and len(screen.seeds) == len(seeds) - 1
        assert not form.display

        await pilot.press("f2")  # the library shows it
        await wait_until(pilot, lambda: isinstance(app.screen, LibraryScreen), what="the library")
        assert any(s.id == stored[0].id for s in app.screen.scenarios)


async def test_discarding_stores_nothing_and_a_failing_model_is_reported(store: Store, tmp_path):
    model = replay_file(tmp_path, "writer", [generation_answer(), "not json", "[]", "{}", "null"])
    app = app_for(store, judge_model=model)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_generate(pilot, app)
        before = len(store.scenarios())
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: screen.proposal is not None, what="a proposal")
        await pilot.press("ctrl+b")
        assert screen.proposal is None and not screen.query_one(ScenarioForm).display
        assert len(store.scenarios()) == before and used_seeds(store) == {}

        await pilot.press("ctrl+g")  # four bad answers in a row: nothing to preview
        await wait_until(pilot, lambda: not screen._generating, what="the attempts to end")
        assert screen.proposal is None
        assert "No scenario" in plain(screen.query_one("#generate-origin"))
        assert len(store.scenarios()) == before and used_seeds(store) == {}
        assert len(screen.seeds) == len(load_library().seed_prompts)


async def test_an_unreachable_model_server_is_reported_and_the_screen_stays_usable(store: Store):
    app = app_for(store, judge_model="openai:nobody@http://127.0.0.1:9/v1")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_generate(pilot, app)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: not screen._generating, timeout=60, what="the attempts to end")
        log = log_text(screen)
        assert "the model did not answer" in log
        assert not screen.query_one("#generate-run", Button).disabled
        assert used_seeds(store) == {}



@pytest.mark.slow
async def test_generate_on_the_embedded_model_then_save(store: Store):
    """The real llama.cpp model writes the preview; SmolLM2 passes the checks on most seeds, so a
    few seeds are tried before giving up."""
    app = app_for(store, judge_model="embedded")
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_generate(pilot, app)
        for seed_index in range(3):
            screen.query_one("#seed-list", OptionList).highlighted = seed_index
            await pilot.press("ctrl+g")
            await wait_until(pilot, lambda: not screen._generating, timeout=300, what="the model's answers")
            if screen.proposal is not None:
                break
        assert screen.proposal is not None, log_text(screen)
        assert "accepted" in log_text(screen)
        seed = screen.proposal.seed
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: screen.proposal is None, what="saved")
        stored = store.scenario(used_seeds(store)[seed]["scenario_id"])
        assert stored.source == GENERATED_SOURCE and len(store.pairings(stored.id)) >= 1
