"""The Train screen, the adapter swap on the live episode and "play against an adapter" in the
library, driven headless with Pilot.

The training test runs a real (tiny) training in the worker process: a two-layer random Llama
(tests/tiny_model.py) on a snapshot of six stored episodes, a few steps on one thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input, OptionList, ProgressBar, Select, Static
from textual_plotext import PlotextPlot

from sotopia_pi.adapters import AdapterRecord, get_adapter, list_adapters, register_adapter
from sotopia_pi.backends import Completion, ModelSpec, create_backend
from sotopia_pi.backends.replay import ReplayBackend
from sotopia_pi.config import Settings
from sotopia_pi.dataset.snapshots import create_snapshot
from sotopia_pi.episode import ActionType, Turn
from sotopia_pi.runner import EpisodeSetup, new_episode
from sotopia_pi.store import Store
from tui.app import SotopiaApp
from tui.screens.adapter_picker import AdapterPickerScreen
from tui.screens.episode import EpisodeScreen
from tui.screens.library import LibraryScreen
from tui.screens.train import TrainScreen
from tui.widgets.scores import SWAP_MARK, ScorePanel, marked_spark
from tui.widgets.transcript import Transcript, adapter_changes, adapter_label

from .curation_helpers import add_episode, seed_profiles
from .factories import action, seed_store
from .lora_files import write_lora
from .test_tui import plain
from .tui_support import wait_until

SIZE = (120, 40)


def register_fake_adapter(store: Store, directory: Path, name: str, *, base: str = "embedded", seed: int = 1) -> AdapterRecord:
    """A registered adapter for the embedded model: a random GGUF LoRA that llama.cpp loads, and a
    small PEFT folder beside it (never used by these tests' agents)."""
    import numpy as np
    from safetensors.numpy import save_file

    peft = directory / f"{name}-peft"
    peft.mkdir(parents=True)
    (peft / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 4, "peft_type": "LORA"}))
    save_file({"lora_A": np.zeros((4, 8), dtype=np.float32)}, str(peft / "adapter_model.safetensors"))
    gguf = write_lora(directory / f"{name}.gguf", seed=seed)
    record = AdapterRecord(
        name=name, base_model=base, peft_dir=str(peft), gguf_path=str(gguf),
        metrics={"heldout_loss_base": 2.5, "heldout_loss_adapter": 2.1},
    )  # fmt: skip
    return register_adapter(store, record)


# -- pure helpers ------------------------------------------------------------------------------


def test_adapter_changes_come_from_the_models_the_turns_record(tmp_path):
    def turn(index: int, model: str, by_human: bool = False) -> Turn:
        return Turn(episode_id="e", index=index, agent=index % 2, action_type=ActionType.speak, argument="x",
                    model="human" if by_human else model, by_human=by_human)  # fmt: skip

    registered = str(tmp_path / "adapters" / "bc-1" / "v2" / "adapter.gguf")
    turns = [
        turn(0, "embedded"),
        turn(1, "embedded+adapter=first"),  # side 2 starts with an adapter
        turn(2, "embedded"),
        turn(3, "human", by_human=True),  # a person's turn changes nothing
        turn(4, f"embedded+adapter={registered}"),
        turn(5, "embedded"),  # side 2 back to the base
    ]
    changes = adapter_changes(turns)
    assert [(c.index, c.side, c.adapter, c.first) for c in changes] == [
        (1, 1, "first", True),
        (4, 0, "bc-1@v2", False),  # the turn records the registered adapter's name and version
        (5, 1, None, False),
    ]
    assert adapter_label(registered) == "bc-1@v2"
    assert adapter_label(None) == "the base model"


def test_the_swap_mark_goes_before_the_first_evaluation_that_saw_it():
    values = [(0, -5.0), (2, 0.0), (4, 5.0)]
    assert marked_spark(values, [3], -5, 5).plain == f"▁▅{SWAP_MARK}█"
    assert marked_spark(values, [2], -5, 5).plain == f"▁{SWAP_MARK}▅█"
    assert marked_spark(values, [9], -5, 5).plain == f"▁▅█{SWAP_MARK}"  # not judged since


# -- the Train screen ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tests.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"), max_positions=4096)


@pytest.mark.slow
async def test_train_screen_plans_trains_and_registers_an_adapter(tmp_path, tiny_dir):
    pytest.importorskip("trl")
    store = Store(tmp_path / "store.sqlite3")
    seed_profiles(store)
    for minute in range(6):
        add_episode(store, (8, 6), minutes=minute)
    create_snapshot(store, "six", [])
    app = SotopiaApp(store, Settings(), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f7")
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        assert screen.query_one("#train-snapshot", Select).value == "six"
        assert screen.query_one("#train-base", Input).value == "embedded"  # the default base

        await pilot.press("ctrl+p")  # no name yet: said in the screen, nothing planned
        assert "Give the adapter a name" in plain(screen.query_one("#train-status", Static))
        assert screen.plan is None

        screen.query_one("#train-base", Input).value = f"hf:{tiny_dir}"
        screen.query_one("#train-name", Input).value = "tiny-bc"
        screen.query_one("#train-length", Input).value = "4096"
        screen.query_one("#train-steps", Input).value = "3"
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: screen.plan is not None, timeout=60, what="the plan")
        plan = screen.plan
        shown = plain(screen.query_one("#train-plan", Static))
        assert f"{plan.train_examples} examples" in shown and f"{plan.answers} answers" in shown
        assert f"{plan.steps} steps" in shown and "estimated time" in shown
        assert plan.steps == 3 and plan.config.max_length == 4096

        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: screen.running, what="the run to start")
        await wait_until(pilot, lambda: screen.record is not None or not screen.running, timeout=300, what="the run to end")
        await pilot.pause()
        kinds = [event.event for event in screen.events]
        assert kinds[0] == "start" and kinds[-1] == "done", kinds
        record = screen.record
        assert record is not None, plain(screen.query_one("#train-status", Static))
        assert get_adapter(store, "tiny-bc").reference == record.reference == "tiny-bc@v1"
        result = plain(screen.query_one("#train-result", Static))
        assert "tiny-bc@v1" in result
        base, adapter = record.metrics["heldout_loss_base"], record.metrics["heldout_loss_adapter"]
        assert f"{base:.3f} → {adapter:.3f}" in result
        progress = screen.query_one("#train-progress", ProgressBar)
        assert progress.total == 3 and progress.progress == 3
        assert screen.losses and screen.eval_losses  # what the plot draws
        assert "train" in plain(screen.query_one(PlotextPlot))  # the plot's legend
        assert "tokens/s" in plain(screen.query_one("#train-status", Static)) or "Done" in plain(screen.query_one("#train-status", Static))

        # the same name again: refused in the screen, with the way out; nothing crashes
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: "Cannot plan" in plain(screen.query_one("#train-status", Static)), what="the refusal")
        assert "already exists" in plain(screen.query_one("#train-status", Static))


# -- the adapter swap on the live episode ----------------------------------------------------------


class SwappingReplay:
    """Canned answers from a backend that swaps adapters in place (as llama.cpp does): its name
    follows the adapter, and `swaps` records each one."""

    def __init__(self, outputs: list[str], model: str):
        self._inner = ReplayBackend(outputs, model)
        self.spec = ModelSpec(kind="replay", target=model.removeprefix("replay:"))
        self.swaps: list[str | None] = []

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def adapter(self):
        return self.spec.adapter

    def set_adapter(self, adapter) -> None:
        self.swaps.append(None if adapter is None else str(adapter))
        self.spec = self.spec.with_adapter(adapter)

    def complete(self, messages, **options) -> Completion:
        return self._inner.complete(messages, **options)

    def close(self) -> None:
        pass


async def test_swap_modal_swaps_a_sides_adapter_between_turns(store: Store, tmp_path):
    seed_store(store)
    register_fake_adapter(store, tmp_path, "bc-1")
    side1, side2 = "replay:side1", "replay:side2"
    agents = {
        side1: SwappingReplay([action("speak", f"Ines {n}") for n in range(4)], side1),
        side2: SwappingReplay([action("speak", f"Tomas {n}") for n in range(4)], side2),
    }
    loads: list[str] = []

    def factory(name, **options):
        loads.append(name)
        return agents[name] if name in agents else create_backend(name, **options)

    episode = new_episode(store, EpisodeSetup("bike-sale", ("ines", "tomas"), (side1, side2), judge_model="", live_eval=False))
    app = SotopiaApp(store, Settings(), backend_factory=factory, load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        app.open_episode(episode.id, autostart=False)
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen), what="the live screen")
        screen = app.screen
        turns = lambda: len(store.turns(episode.id))  # noqa: E731
        for count in (1, 2):
            await pilot.press("n")
            await wait_until(pilot, lambda count=count: turns() == count and not screen.playing, what=f"turn {count}")

        await pilot.press("a")
        picker = app.screen
        assert isinstance(picker, AdapterPickerScreen)
        options = picker.query_one(OptionList)
        labels = [plain_option(options, i) for i in range(options.option_count)]
        assert labels[0].startswith("base model") and labels[1].startswith("bc-1@v1")
        assert "2.500 → 2.100" in labels[1]  # its held-out loss against the base's
        await pilot.press("2")  # for side 2
        assert "Tomas" in plain(picker.query_one("#picker-title", Static))
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: screen.episode.agent_models[1] == f"{side2}+adapter=bc-1@v1", what="the swap")
        assert agents[side2].swaps == ["bc-1@v1"] and agents[side1].swaps == []
        assert loads.count(side2) == 1  # swapped in place: the base was not loaded again
        assert f"{side2}+adapter=bc-1@v1" in plain(screen.query_one("#episode-header", Static))

        for count in (3, 4):
            await pilot.press("n")
            await wait_until(pilot, lambda count=count: turns() == count and not screen.playing, what=f"turn {count}")
        stored = store.turns(episode.id)
        assert [t.model for t in stored] == [side1, side2, side1, f"{side2}+adapter=bc-1@v1"]
        transcript = screen.query_one(Transcript)
        assert transcript.view(3).change_note == "— Tomas Reyes now plays with adapter bc-1@v1 —"
        assert all(transcript.view(i).change_note == "" for i in (0, 1, 2))
        text = transcript.text()
        assert text.index("now plays with adapter bc-1@v1") < text.index("Tomas 1")
        assert f"{SWAP_MARK} Tomas: bc-1@v1 from turn #3" in screen.query_one(ScorePanel).text()

        # and back to the base model
        await pilot.press("a", "2", "enter")
        await wait_until(pilot, lambda: screen.episode.agent_models[1] == side2, what="the swap back")
        await pilot.press("n")
        await wait_until(pilot, lambda: turns() == 5 and not screen.playing, what="turn 5")
        await pilot.press("n")
        await wait_until(pilot, lambda: turns() == 6 and not screen.playing, what="turn 6")
        assert transcript.view(5).change_note == "— Tomas Reyes now plays with the base model —"
        assert agents[side2].swaps == ["bc-1@v1", None]


def plain_option(options: OptionList, index: int) -> str:
    prompt = options.get_option_at_index(index).prompt
    return prompt.plain if hasattr(prompt, "plain") else str(prompt)


async def test_a_failed_swap_is_said_and_the_side_keeps_its_model(store: Store, tmp_path):
    seed_store(store)
    register_fake_adapter(store, tmp_path, "bc-1")
    side2 = "replay:side2"
    loads: list[str] = []

    def factory(name, **options):  # a plain replay cannot swap: the runner reloads, which fails here
        loads.append(name)
        if "+adapter=" in name:
            raise RuntimeError("this base cannot take that adapter")
        return ReplayBackend([action("speak", "hello")] * 4, name)

    episode = new_episode(store, EpisodeSetup("bike-sale", ("ines", "tomas"), ("human", side2), judge_model="", live_eval=False))
    app = SotopiaApp(store, Settings(), backend_factory=factory, load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        app.open_episode(episode.id, autostart=False)
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen), what="the live screen")
        await pilot.press("a")
        picker = app.screen
        assert isinstance(picker, AdapterPickerScreen)
        assert picker.sides == {1: "Tomas Reyes (side 2)"}  # side 1 is a person: no adapter
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: loads == [f"{side2}+adapter=bc-1@v1"], what="the attempt")
        await wait_until(
            pilot,
            lambda: any("this base cannot take that adapter" in str(n.message) for n in app._notifications),
            what="the error",
        )
        assert isinstance(app.screen, EpisodeScreen)
        assert store.episode(episode.id).agent_models == ["human", side2]


# -- the library: a person against an adapter --------------------------------------------------------


async def test_library_starts_a_person_against_an_adapter_in_two_keys(store: Store, tmp_path):
    seed_store(store)
    register_fake_adapter(store, tmp_path, "bc-1")
    register_fake_adapter(store, tmp_path, "bc-2", seed=2)
    settings = Settings(agent1_model="embedded", agent2_model="embedded", judge_model="", live_eval=False)
    app = SotopiaApp(store, settings, load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        library = app.screen
        assert isinstance(library, LibraryScreen)
        await wait_until(pilot, lambda: library.selected is not None, what="a scenario")
        await pilot.press("ctrl+p")
        assert isinstance(app.screen, AdapterPickerScreen)
        await pilot.press("down", "enter")  # the second adapter: the list starts on the first
        await wait_until(pilot, lambda: isinstance(app.screen, EpisodeScreen), what="the live screen")
        screen = app.screen
        assert screen.episode.agent_models == ["human", "embedded-base+adapter=bc-2@v1"]
        assert screen.episode.agent_ids == ["ines", "tomas"]
        assert "YOU" in plain(screen.query_one("#episode-header", Static))
        assert len(list_adapters(store)) == 2


async def test_library_without_adapters_says_where_to_train_one(store: Store):
    seed_store(store)
    app = SotopiaApp(store, Settings(judge_model=""), load_library=False)
    async with app.run_test(size=SIZE) as pilot:
        library = app.screen
        await wait_until(pilot, lambda: library.selected is not None, what="a scenario")
        await pilot.press("ctrl+p")
        assert isinstance(app.screen, LibraryScreen)
        assert any("Train screen (F7)" in str(n.message) for n in app._notifications)
