"""Training end to end on a tiny Llama: plan a snapshot, train in the worker process, resume
after a kill, register the adapter."""

from __future__ import annotations

import pytest

from sotopia_pi.dataset.snapshots import create_snapshot
from sotopia_pi.store import Store
from sotopia_pi.training.config import TrainConfig
from sotopia_pi.training.launcher import TrainingError, finish_training, launch_training, plan_training
from tests.curation_helpers import add_episode, seed_profiles

pytest.importorskip("trl")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tests.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"), max_positions=4096)


@pytest.fixture
def snapshot_store(tmp_path, monkeypatch) -> Store:
    monkeypatch.setenv("SOTOPIA_PI_HOME", str(tmp_path / "home"))
    store = Store(tmp_path / "store.sqlite3")
    seed_profiles(store)
    for minute in range(6):
        add_episode(store, (8, 6), minutes=minute)
    create_snapshot(store, "six", [])
    return store


def _config(tiny_dir, name: str, **overrides) -> TrainConfig:
    options = dict(
        snapshot="six", base=f"hf:{tiny_dir}", name=name, epochs=3, learning_rate=5e-3, grad_accumulation=1,
        heldout_fraction=0.34, save_every=2, max_length=4096, lora_dropout=0.0, threads=1,
    )  # fmt: skip
    options.update(overrides)
    return TrainConfig(**options)


def _run(plan, resume=False):
    run = launch_training(plan, resume=resume)
    events = list(run.events())
    return run, events


def test_training_lowers_held_out_loss_and_registers_the_adapter(snapshot_store, tiny_dir):
    plan = plan_training(snapshot_store, _config(tiny_dir, "tiny-bc"))
    assert plan.eval_examples > 0 and plan.train_examples > 0
    assert plan.answers > plan.train_examples  # conversations hold several answers each
    run, events = _run(plan)
    assert run.error is None, run.error
    kinds = [event.event for event in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert "step" in kinds and "eval" in kinds and "checkpoint" in kinds
    result = run.result
    assert result["heldout_loss_adapter"] < result["heldout_loss_base"]
    record = finish_training(snapshot_store, plan)
    assert record.name == "tiny-bc" and record.version == 1
    assert record.metrics["heldout_loss_adapter"] == result["heldout_loss_adapter"]
    assert record.snapshot_digest == plan.snapshot_digest
    assert record.status == "peft-only"  # an hf: base has no GGUF to convert for


def test_a_killed_run_resumes_and_ends_where_an_uninterrupted_run_ends(snapshot_store, tiny_dir):
    whole_plan = plan_training(snapshot_store, _config(tiny_dir, "whole"))
    whole, _ = _run(whole_plan)
    assert whole.error is None, whole.error

    plan = plan_training(snapshot_store, _config(tiny_dir, "killed"))
    run = launch_training(plan)
    for event in run.events():
        if event.event == "checkpoint" and event.step >= 2:
            run.kill()
    assert run.result is None  # it never finished
    with pytest.raises(TrainingError):
        plan_training(snapshot_store, _config(tiny_dir, "killed"))  # the name is taken by the unfinished run
    resumed_plan = plan_training(snapshot_store, _config(tiny_dir, "killed"), resume=True)
    resumed, events = _run(resumed_plan, resume=True)
    assert resumed.error is None, resumed.error
    assert resumed.result["resumed_from"].endswith("checkpoint-2")
    assert resumed.result["steps"] == whole.result["steps"]
    assert resumed.result["loss_curve"] == pytest.approx(whole.result["loss_curve"], rel=1e-4)
    assert resumed.result["heldout_loss_adapter"] == pytest.approx(whole.result["heldout_loss_adapter"], rel=1e-4)


def test_a_snapshot_that_does_not_exist_is_a_clear_error(snapshot_store, tiny_dir):
    from sotopia_pi.dataset.errors import SnapshotError

    with pytest.raises(SnapshotError, match="no snapshot named 'nope'"):
        plan_training(snapshot_store, _config(tiny_dir, "x", snapshot="nope"))
