"""The sotopia-pi Textual app: `sotopia-pi` with no arguments opens it.

A thin layer over the engine: the store, the settings and the backend factory are injected, so
tests build the app around a temporary store and deterministic backends.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import sys
from collections.abc import Callable

from textual.binding import Binding

from sotopia_pi import config
from sotopia_pi.backends import ChatBackend, create_backend
from sotopia_pi.config import Settings
from sotopia_pi.episode import EpisodeStatus
from sotopia_pi.store import Store

from .errors import describe
from .key_order import OrderedKeysApp
from .repaint import RepaintingApp
from .screens.adapter_picker import AdapterPickerScreen
from .screens.character_editor import CharacterEditorScreen
from .screens.curation import CurationScreen
from .screens.episode import EpisodeScreen
from .screens.export import ExportScreen
from .screens.generate import GenerateScreen
from .screens.help import HelpScreen
from .screens.inspector import InspectorScreen, ReplayScreen
from .screens.library import LibraryScreen
from .screens.reasoning import ReasoningScreen
from .screens.scenario_editor import ScenarioEditorScreen
from .screens.settings import SettingsScreen
from .screens.train import TrainScreen
from .screens.turn_editor import TurnEditorScreen
from .widgets.filter_bar import ActiveFilters


def ensure_builtin_library(store: Store) -> str | None:
    """Load the built-in scenario library into the store, if the engine ships one.
    Returns an error message instead of raising: a bad library must not keep the app closed."""
    if importlib.util.find_spec("sotopia_pi.library") is None:
        return None
    try:
        library = importlib.import_module("sotopia_pi.library")
        library.ensure_library(store)
    except Exception as error:  # shown to the user; the app still opens on what the store holds
        return f"The built-in scenario library could not be loaded: {error}"
    return None


GIL_SWITCH_SECONDS = 0.001


class SotopiaApp(OrderedKeysApp, RepaintingApp):
    TITLE = "sotopia-pi"
    CSS_PATH = "app.tcss"
    ENABLE_COMMAND_PALETTE = False
    MODES = {
        "library": LibraryScreen,
        "inspector": InspectorScreen,
        "settings": SettingsScreen,
        "curation": CurationScreen,
        "generate": GenerateScreen,
        "train": TrainScreen,
    }
    DEFAULT_MODE = "library"
    # screen classes for small terminals (app.tcss lays screens out for 80x24 with them)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    BINDINGS = [
        # shown on each main screen's top line (widgets.fkeys), not in the footer
        Binding("f1,question_mark", "help", "Help", show=False),
        Binding("f2", "go('library')", "Library", show=False),
        Binding("f3", "go('inspector')", "Inspector", show=False),
        Binding("f4", "go('settings')", "Settings", show=False),
        Binding("f5", "go('generate')", "Generate", show=False),
        Binding("f6", "go('curation')", "Curation", show=False),
        Binding("f7", "go('train')", "Train", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        backend_factory: Callable[..., ChatBackend] = create_backend,
        load_library: bool = True,
        startup_errors: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.settings = settings
        self.backend_factory = backend_factory
        self.startup_errors = list(startup_errors or [])
        # Episodes with a live runner (on any screen stack, or still finishing a turn after
        # their screen closed): a second runner on the same episode would fight over turns.
        self.busy_episodes: dict[str, EpisodeScreen] = {}
        self._quitting = False
        if load_library:
            error = ensure_builtin_library(store)
            if error:
                self.startup_errors.append(error)

    def on_mount(self) -> None:
        # Everything built at startup lives as long as the app: keep it out of the cyclic
        # garbage collector so that full collections (which stop every thread) stay short.
        self.call_after_refresh(gc.freeze)
        # Model threads run long stretches of Python (loading, grammar building, sampling); a
        # shorter GIL switch interval keeps them from starving the screen (the convoy effect).
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        for error in self.startup_errors:
            self.notify(error, title="Problem at startup", severity="error", timeout=20)

    # -- navigation -----------------------------------------------------------------------

    async def action_go(self, mode: str) -> None:
        """Show the screen an F-key names. A finished episode left open on top of that screen
        is closed on the way (one still being judged, or still playing, stays)."""
        if self.current_mode != mode:
            await self.switch_mode(mode)
        while len(self.screen_stack) > 1 and isinstance(self.screen, EpisodeScreen) and self.screen.finished:
            if self.screen.playing:
                self.notify("This episode is still being judged; Esc leaves it.")
                return
            await self.pop_screen()

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        sections = [
            ("Everywhere", self.BINDINGS),
            ("Library (F2)", LibraryScreen.BINDINGS),
            ("Scenario editor (^n / ^o in the library)", ScenarioEditorScreen.BINDINGS),
            ("Character editor (^n / ^o on the characters tab)", CharacterEditorScreen.BINDINGS),
            ("Generate (F5)", GenerateScreen.BINDINGS),
            ("Live episode", EpisodeScreen.BINDINGS),
            ("Inspector (F3)", InspectorScreen.BINDINGS),
            ("Replay of one episode", ReplayScreen.BINDINGS),
            ("Judge's reasoning", ReasoningScreen.BINDINGS),
            ("Settings (F4)", SettingsScreen.BINDINGS),
            ("Curation (F6)", CurationScreen.BINDINGS),
            ("Curation: active filter list", ActiveFilters.BINDINGS),
            ("Curation: turn editor (e)", TurnEditorScreen.BINDINGS),
            ("Curation: export a snapshot (x)", ExportScreen.BINDINGS),
            ("Train (F7)", TrainScreen.BINDINGS),
            ("Adapter picker (a in a live episode, ^p in the library)", AdapterPickerScreen.BINDINGS),
        ]
        self.push_screen(HelpScreen(sections))

    def open_episode(self, episode_id: str, autostart: bool = True) -> None:
        """Show the live screen for a stored episode (on top of the current screen)."""
        if episode_id in self.busy_episodes:
            self.notify("This episode is already open or still finishing a turn; try again in a moment.")
            return
        try:
            screen = EpisodeScreen(
                self.store, episode_id, autostart=autostart, backend_factory=self.backend_factory
            )
        except Exception as error:  # a record that fails validation, a missing character
            self.notify(describe(error), title="Cannot open the episode", severity="error", timeout=10)
            return
        self.push_screen(screen)

    def resume_episode(self, episode_id: str) -> None:
        episode = self.store.episode(episode_id)
        if episode.status not in (EpisodeStatus.paused, EpisodeStatus.running):
            self.notify(f"This episode is {episode.status.value}; only unfinished ones resume.")
            return
        self.open_episode(episode_id)

    def action_quit(self) -> None:
        """Quit; with a runner at work, pause it now and quit once its model call returns
        (a model or judge call cannot be interrupted, and the process would wait for it
        anyway, with the screen gone). A second ^q quits without waiting on screen."""
        if self._quitting or not any(screen.playing for screen in self.busy_episodes.values()):
            self.exit()
            return
        self._quitting = True
        for screen in list(self.busy_episodes.values()):
            screen.pause_now()
        self.notify(
            "Pausing the episode; quitting as soon as the model call in progress returns "
            "(the judge's official score can take a while). ^q again closes the screen now.",
            title="Quitting",
            timeout=60,
        )
        self.set_interval(0.2, self._quit_when_idle)

    def _quit_when_idle(self) -> None:
        if not any(screen.playing for screen in self.busy_episodes.values()):
            self.exit()

    def apply_settings(self, settings: Settings) -> None:
        """Use new settings from now on (screens read them when they are shown again)."""
        self.settings = settings


def make_app(
    store: Store | None = None,
    settings: Settings | None = None,
    **options,
) -> SotopiaApp:
    """The app with the user's store and settings unless given (a bad config file is reported
    in the app and the defaults are used)."""
    errors: list[str] = []
    if settings is None:
        settings, error = config.load_or_default()
        if error:
            errors.append(f"{error}. Using the defaults; the file was not changed.")
    return SotopiaApp(store or Store(), settings, startup_errors=errors, **options)


def run_tui() -> None:
    make_app().run()
