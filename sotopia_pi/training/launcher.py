"""Plan, launch and finish a training run; used by `sotopia-pi train` and the TUI's Train screen.

    plan = plan_training(store, config)       # examples, tokens, an estimate of the time
    run = launch_training(plan)               # the worker process (training.worker)
    for event in run.events(): ...            # JSON-line progress events as TrainingEvent
    record = finish_training(store, plan)     # convert to GGUF and register the adapter

A run lives in paths.home()/training/NAME: config.json, examples.jsonl, checkpoints/, the
finished PEFT adapter and result.json. `resume=True` launches the worker on the same directory,
which continues from the newest checkpoint. Nothing is registered, and no earlier adapter is
touched, until a run has finished.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .. import paths
from ..dataset.export import snapshot_examples
from ..dataset.snapshots import load_snapshot
from ..errors import SotopiaError
from ..store import Store
from .config import TrainConfig
from .examples import build_training_examples, split_by_episode, tokenize_examples
from .worker import ADAPTER_DIR, CONFIG_FILE, EXAMPLES_FILE, INTERRUPTED_EXIT, RESULT_FILE

# Measured on 2 CPU cores with SmolLM2-135M (feasibility.md §4): ~130-145 tokens/s at seq 512-1024.
CPU_TOKENS_PER_SECOND = 130.0


class TrainingError(SotopiaError, RuntimeError):
    """A training run could not be planned, started or finished; the message says why."""


class TrainingPlan(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: TrainConfig
    run_dir: Path
    snapshot_digest: str
    answers: int = Field(description="agent answers the adapter learns from (one per per-turn example)")
    train_examples: int
    eval_examples: int
    dropped_examples: int = Field(description="examples with no answer inside max_length")
    train_tokens: int
    target_tokens: int
    steps: int
    estimated_seconds: float


class TrainingEvent(BaseModel):
    model_config = ConfigDict(extra="allow")

    event: str


def run_dir_for(name: str) -> Path:
    return paths.home() / "training" / name


def load_tokenizer(base: str):
    """The tokenizer of a base model; for a GGUF base it comes from the dequantized copy when one
    is cached (a fraction of a second), else from a full load once (which also makes the cache)."""
    from transformers import AutoTokenizer

    from .worker import base_spec, load_base

    spec = base_spec(base)
    if spec.gguf_file:
        import torch

        from ..backends.transformers_backend import gguf_cache_dir

        cached = gguf_cache_dir((Path(spec.target) / spec.gguf_file).resolve(), torch.float32)
        if (cached / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(cached, local_files_only=True)
        _, tokenizer = load_base(base, "cpu", False)
        return tokenizer
    return AutoTokenizer.from_pretrained(spec.target, local_files_only=True)


def plan_training(store: Store, config: TrainConfig, tokenizer: Any = None, *, resume: bool = False) -> TrainingPlan:
    """Read the snapshot, build and tokenize the examples, and write the run directory."""
    snapshot = load_snapshot(store, config.snapshot)
    run_dir = Path(config.run_dir) if config.run_dir else run_dir_for(config.name)
    config = config.model_copy(update={"run_dir": run_dir})
    if resume:
        return _existing_plan(run_dir, config, snapshot.manifest.digest)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise TrainingError(f"a run named {config.name!r} already exists in {run_dir}; use --resume to continue it or pick another name")
    examples, answers = _examples_for_task(snapshot, config)
    train, heldout = split_by_episode(examples, config.heldout_fraction, config.seed)
    tokenizer = tokenizer or load_tokenizer(config.base)
    train_tokens, dropped_train = tokenize_examples(tokenizer, train, config.max_length)
    eval_tokens, dropped_eval = tokenize_examples(tokenizer, heldout, config.max_length)
    if not train_tokens:
        raise TrainingError(f"snapshot {config.snapshot!r} gives no {config.task} training example that fits in {config.max_length} tokens")
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_examples(run_dir / EXAMPLES_FILE, train_tokens, eval_tokens)
    (run_dir / CONFIG_FILE).write_text(config.model_dump_json(indent=2))
    token_count = sum(len(t.input_ids) for t in train_tokens)
    plan = TrainingPlan(
        config=config,
        run_dir=run_dir,
        snapshot_digest=snapshot.manifest.digest,
        answers=answers,
        train_examples=len(train_tokens),
        eval_examples=len(eval_tokens),
        dropped_examples=dropped_train + dropped_eval,
        train_tokens=token_count,
        target_tokens=sum(t.target_tokens for t in train_tokens),
        steps=config.planned_steps(len(train_tokens)),
        estimated_seconds=_estimate_seconds(token_count, len(train_tokens), config),
    )
    (run_dir / "plan.json").write_text(plan.model_dump_json(indent=2))
    return plan


def _examples_for_task(snapshot, config: TrainConfig) -> tuple[list, int]:
    """The examples of the run's task and how many answers they teach."""
    if config.task == "agent":
        per_turn = snapshot_examples(snapshot)
        return build_training_examples(per_turn, config.layout), len(per_turn)
    from ..judge import load_dimension_set
    from .judge_examples import judge_examples

    sides = [(ref.episode_id, ref.side) for ref in snapshot.manifest.sides]
    examples = judge_examples(snapshot.episodes, sides, load_dimension_set("sotopia"))
    if not examples:
        raise TrainingError(f"snapshot {config.snapshot!r} has no side with a complete terminal evaluation to learn from")
    return examples, len(examples)


def _existing_plan(run_dir: Path, config: TrainConfig, digest: str) -> TrainingPlan:
    path = run_dir / "plan.json"
    if not path.is_file():
        raise TrainingError(f"nothing to resume: no run named {config.name!r} in {run_dir}")
    plan = TrainingPlan.model_validate_json(path.read_text())
    if plan.snapshot_digest != digest:
        raise TrainingError(f"run {config.name!r} was planned on another version of snapshot {config.snapshot!r}")
    return plan


def _estimate_seconds(tokens: int, examples: int, config: TrainConfig) -> float:
    """At the rate measured on 2 CPU cores: all epochs, or only `max_steps` steps' share of them."""
    planned = tokens * config.epochs
    if config.max_steps:
        per_step = tokens / examples * config.batch_size * config.grad_accumulation
        planned = min(planned, per_step * config.max_steps)
    return round(planned / CPU_TOKENS_PER_SECOND, 1)


def _write_examples(path: Path, train: list, heldout: list) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for split, rows in (("train", train), ("eval", heldout)):
            for row in rows:
                handle.write(json.dumps({"split": split, **row.model_dump(include={"id", "input_ids", "completion_mask"})}) + "\n")


class TrainingRun:
    """The worker process of one run. `events()` yields its progress until it exits."""

    def __init__(self, plan: TrainingPlan, process: subprocess.Popen):
        self.plan = plan
        self.process = process
        self.error: str | None = None
        self.result: dict | None = None
        self.interrupted = False

    def events(self) -> Iterator[TrainingEvent]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = TrainingEvent.model_validate_json(line)
            except ValueError:
                continue  # a library printed to stdout; progress lines are JSON
            if event.event == "error":
                self.error = getattr(event, "message", "training failed")
            elif event.event == "done":
                self.result = getattr(event, "result", None)
            elif event.event == "interrupted":
                self.interrupted = True
            yield event
        self.process.wait()
        if self.process.returncode == INTERRUPTED_EXIT:
            self.interrupted = True
        elif self.process.returncode != 0 and self.error is None:
            self.error = f"the training process ended with status {self.process.returncode} (see {self.log_path})"

    @property
    def log_path(self) -> Path:
        return self.plan.run_dir / "worker.log"

    def cancel(self) -> None:
        """Ask the worker to save a checkpoint and stop (it finishes its current step first)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()


def launch_training(plan: TrainingPlan, *, resume: bool = False, threads: int | None = None) -> TrainingRun:
    command = [sys.executable, "-m", "sotopia_pi.training.worker", str(plan.run_dir)]
    if resume:
        command.append("--resume")
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    log = open(plan.run_dir / "worker.log", "ab")
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
        start_new_session=True,  # a Ctrl-C in the terminal reaches the worker only through cancel()
    )
    log.close()
    return TrainingRun(plan, process)


def finish_training(store: Store, plan: TrainingPlan):
    """Register the finished adapter: the registry copies the PEFT folder into the data directory
    and converts it to a GGUF LoRA when the base runs from a GGUF."""
    from ..adapters import AdapterRecord, base_model_digest, register_adapter

    config = plan.config
    result_path = plan.run_dir / RESULT_FILE
    peft_source = plan.run_dir / ADAPTER_DIR
    if not result_path.is_file() or not peft_source.is_dir():
        raise TrainingError(f"run {config.name!r} has not finished: no adapter in {plan.run_dir}")
    result = json.loads(result_path.read_text())
    record = AdapterRecord(
        name=config.name,
        base_model=config.base,
        base_digest=base_model_digest(config.base),
        snapshot=config.snapshot,
        snapshot_digest=plan.snapshot_digest,
        hyperparameters=config.model_dump(mode="json", exclude={"run_dir"}),
        metrics={
            **result,
            "layout": config.layout,
            "train_examples": plan.train_examples,
            "eval_examples": plan.eval_examples,
            "answers": plan.answers,
        },
        peft_dir=str(peft_source),
    )
    return register_adapter(store, record)


def discard_run(name: str) -> None:
    shutil.rmtree(run_dir_for(name), ignore_errors=True)
