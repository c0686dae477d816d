"""The live episode's score panel: a chart of the live scores against the turn, the turns the
live judge skipped, and a progress bar while the terminal evaluation is made."""

from __future__ import annotations

from sotopia_pi.config import Settings
from sotopia_pi.episode import Evaluation
from sotopia_pi.runner import EpisodeSetup, new_episode
from sotopia_pi.store import Store
from tui.app import SotopiaApp
from tui.screens.episode import EpisodeScreen
from tui.widgets.scores import ScorePanel, chart_series

from .factories import action, judge_answer, seed_store
from .tui_support import HeldBackend, demo_episodes, factory_with, replay_file, wait_until

SIZE = (120, 40)
FINISHED, PAUSED = "01EPISODEFINISHED000000000", "01EPISODEPAUSED00000000000"


def chart_text(panel: ScorePanel) -> str:
    return panel.query_one("#scores-chart").render().plain


async def test_the_live_scores_are_a_chart_against_the_turn(store: Store):
    demo_episodes(store)
    app = SotopiaApp(store, Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        app.open_episode(FINISHED, autostart=False)
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        await pilot.pause()
        panel = app.screen.query_one(ScorePanel)
        provisional = [e for e in store.evaluations(FINISHED) if e.kind == "provisional"]
        turns, values = chart_series(panel.history, 0, None)
        assert turns == [0, 2, 3]  # one point per live score, at the turn it scored
        assert values == [e.agents[0].overall for e in provisional]
        chart = panel.query_one("#scores-chart")
        assert chart.display and chart.size.height >= 8
        assert "live scores: overall" in chart_text(panel)
        assert "TERMINAL" in panel.text()  # the table shows the official score

        first = panel.dimensions.dimensions[0].name
        await pilot.press("d")
        assert panel.dimension == first
        assert f"overall (●) and {first} (x)" in chart_text(panel)
        turns, values = chart_series(panel.history, 1, first)
        assert values == [float(e.agents[1].scores[first].score) for e in provisional]
        for _ in panel.dimensions.dimensions:
            await pilot.press("d")
        assert panel.dimension is None  # round to the overall score alone


async def test_turns_the_live_judge_skipped_are_said_on_screen(store: Store):
    demo_episodes(store)
    base = store.evaluations(PAUSED)[0]
    late = base.model_copy(update={"id": "01LATE", "after_turn": 1, "skipped_turns": [0]})
    store.add_evaluation(Evaluation.model_validate(late.model_dump()))
    app = SotopiaApp(store, Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        app.open_episode(PAUSED, autostart=False)
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        await pilot.pause()
        text = app.screen.query_one(ScorePanel).text()
        assert "skipped turn #0" in text and "scored the newest turn" in text


async def test_a_progress_bar_runs_while_the_terminal_evaluation_is_made(store: Store, tmp_path):
    seed_store(store)
    side1 = replay_file(tmp_path, "side1", [action("speak", "Two-fifty.")])
    side2 = replay_file(tmp_path, "side2", [action("speak", "Two hundred.")])
    judge_name = replay_file(tmp_path, "judge", [])
    judge = HeldBackend([judge_answer()], name=judge_name)
    episode = new_episode(
        store, EpisodeSetup("bike-sale", ("ines", "tomas"), (side1, side2), judge_model=judge_name, live_eval=False, max_turns=2)
    )
    app = SotopiaApp(store, Settings(), backend_factory=factory_with({judge_name: judge}), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.open_episode(episode.id)
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen))
        await pilot.pause()
        panel = app.screen.query_one(ScorePanel)
        await wait_until(pilot, judge.generating.is_set, what="the terminal evaluation to start")
        await wait_until(pilot, lambda: panel.query_one("#scores-judging").display, what="the progress bar")
        assert "The judge is scoring the whole episode" in panel.text()
        judge.release.set()
        await wait_until(pilot, lambda: store.terminal_evaluation(episode.id) is not None)
        await wait_until(pilot, lambda: not panel.query_one("#scores-judging").display, what="the bar to go")
        assert "TERMINAL" in panel.text() and "scoring the whole episode" not in panel.text()
