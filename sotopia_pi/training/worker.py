"""The training process: `python -m sotopia_pi.training.worker RUN_DIR`.

It reads RUN_DIR/config.json (a TrainConfig) and RUN_DIR/examples.jsonl (tokenized examples, one
per line, with a "split" of train or eval, written by the launcher), trains a LoRA adapter with
TRL's SFTTrainer and writes one JSON object per line to stdout:

    {"event": "start", "train_examples", "eval_examples", "train_tokens", "total_steps", "device"}
    {"event": "step", "step", "total_steps", "epoch", "loss", "learning_rate", "tokens_per_s", "eta_s"}
    {"event": "eval", "step", "epoch", "eval_loss"}
    {"event": "checkpoint", "step", "path"}
    {"event": "done", "result": {...}}            the adapter is in RUN_DIR/adapter
    {"event": "error", "message"}

Checkpoints go to RUN_DIR/checkpoints every `save_every` steps; started again on the same run
directory with "--resume", it continues from the newest one (optimizer, scheduler, RNG and data
order included), so an interrupted run finishes like an uninterrupted one. SIGINT or SIGTERM
saves a checkpoint at the end of the current step and exits with status 130.

It runs in its own process so that torch threads never compete with the UI or a playing agent.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .config import TrainConfig

INTERRUPTED_EXIT = 130
EXAMPLES_FILE = "examples.jsonl"
CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"
BASE_EVAL_FILE = "base_eval.json"
ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"


EVENTS_FILE = "events.jsonl"
_events_log: Path | None = None


def emit(event: str, **fields: Any) -> None:
    """One progress line on stdout for the launcher, and the same line in RUN_DIR/events.jsonl so
    that a run can be followed (tail -f) or inspected after the fact."""
    line = json.dumps({"event": event, **fields}) + "\n"
    sys.stdout.write(line)
    sys.stdout.flush()
    if _events_log is not None:
        with open(_events_log, "a", encoding="utf-8") as handle:
            handle.write(line)


def read_examples(run_dir: Path) -> tuple[list[dict], list[dict]]:
    train: list[dict] = []
    evaluation: list[dict] = []
    with open(run_dir / EXAMPLES_FILE, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            (evaluation if row["split"] == "eval" else train).append(
                {"input_ids": row["input_ids"], "completion_mask": row["completion_mask"]}
            )
    return train, evaluation


def pick_device(config: TrainConfig) -> str:
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return config.device


def base_spec(base: str):
    """The base as a transformers model name: `embedded` is SmolLM2's GGUF, dequantized."""
    from ..backends import parse_model_name
    from ..backends.base import ModelSpec
    from ..catalog import embedded_model_path

    spec = parse_model_name(base)
    if spec.kind in {"embedded", "embedded-base"}:
        path = embedded_model_path()
        spec = ModelSpec(kind="hf", target=str(path.parent), gguf_file=path.name)
    if spec.kind != "hf" or spec.adapter:
        raise ValueError(f"{base}: training needs a base transformers can load (embedded, hf:DIR, hf:DIR#gguf=FILE)")
    return spec


def load_base(base: str, device: str, quantize_4bit: bool):
    """The base model and tokenizer, as transformers loads them (embedded: the dequantized GGUF)."""
    import torch

    from ..backends.transformers_backend import _load_directory, _load_gguf, _model_directory

    spec = base_spec(base)
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if spec.gguf_file:
        model, tokenizer, directory, _ = _load_gguf(spec, torch.float32)
    else:
        directory = _model_directory(spec)
        model, tokenizer = _load_directory(spec, directory, torch.float32)
    if device == "cuda":
        model = _reload_for_cuda(model, directory, dtype, quantize_4bit)
    return model, tokenizer


def _reload_for_cuda(model, directory: Path, dtype, quantize_4bit: bool):
    """On CUDA: bf16 weights, or a 4-bit base (QLoRA) when bitsandbytes is installed."""
    from transformers import AutoModelForCausalLM

    options: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if quantize_4bit:
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as error:
            raise RuntimeError("4-bit loading needs the optional bitsandbytes package (pip install bitsandbytes)") from error
        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
        )
    del model
    return AutoModelForCausalLM.from_pretrained(directory, **options)


def lora_config(config: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


class _Progress:
    """TrainerCallback that reports progress as JSON lines and stops cleanly on a signal."""

    def __init__(self, tokens_per_step: float):
        self.tokens_per_step = tokens_per_step
        self.stop_requested = False
        self.started = time.perf_counter()
        self.first_step: int | None = None
        self.tokens_done = 0

    def as_callback(self):
        from transformers import TrainerCallback

        progress = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                return progress.step_end(state, control)

            def on_log(self, args, state, control, logs=None, **kwargs):
                progress.log(state, logs or {})

            def on_evaluate(self, args, state, control, metrics=None, **kwargs):
                if metrics and "eval_loss" in metrics:
                    emit("eval", step=state.global_step, epoch=state.epoch, eval_loss=metrics["eval_loss"])

            def on_save(self, args, state, control, **kwargs):
                emit("checkpoint", step=state.global_step, path=str(Path(args.output_dir) / f"checkpoint-{state.global_step}"))

        return Callback()

    def step_end(self, state, control):
        step = state.global_step
        if self.first_step is None:
            self.first_step = step - 1
            self.started = time.perf_counter()
        self.tokens_done += self.tokens_per_step
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        steps_done = step - self.first_step
        rate = self.tokens_done / elapsed
        eta = (state.max_steps - step) * elapsed / max(steps_done, 1)
        emit("step", step=step, total_steps=state.max_steps, epoch=state.epoch, tokens_per_s=round(rate, 1), eta_s=round(eta, 1))
        if self.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        return control

    def log(self, state, logs: dict) -> None:
        if "loss" in logs:
            emit("loss", step=state.global_step, epoch=state.epoch, loss=logs["loss"], learning_rate=logs.get("learning_rate"))


def _tokens_per_step(train: list[dict], config: TrainConfig) -> float:
    """Mean tokens read per optimizer step (an estimate for the rate: the sampler shuffles, but
    over an epoch the mean is exact)."""
    mean = sum(len(row["input_ids"]) for row in train) / max(len(train), 1)
    return mean * config.batch_size * config.grad_accumulation


def train(run_dir: Path, resume: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig, SFTTrainer

    config = TrainConfig.model_validate_json((run_dir / CONFIG_FILE).read_text())
    device = pick_device(config)
    if device == "cpu":
        torch.set_num_threads(config.threads or os.cpu_count() or 1)
    train_rows, eval_rows = read_examples(run_dir)
    if not train_rows:
        raise RuntimeError("no training examples")
    model, tokenizer = load_base(config.base, device, config.quantize_4bit)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    set_seed(config.seed)  # before the LoRA weights are drawn: the same seed gives the same run
    model = get_peft_model(model, lora_config(config))
    checkpoints = run_dir / CHECKPOINTS_DIR
    arguments = SFTConfig(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accumulation,
        completion_only_loss=True,
        max_length=config.max_length,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_every,
        save_total_limit=2,
        eval_strategy="epoch" if eval_rows else "no",
        seed=config.seed,
        data_seed=config.seed,
        bf16=device == "cuda" and torch.cuda.is_bf16_supported(),
        use_cpu=device == "cpu",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    progress = _Progress(_tokens_per_step(train_rows, config))
    trainer = SFTTrainer(
        model=model,
        args=arguments,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        callbacks=[progress.as_callback()],
    )
    _stop_on_signals(progress)
    steps = trainer.state.max_steps or config.planned_steps(len(train_rows))
    emit(
        "start",
        train_examples=len(train_rows),
        eval_examples=len(eval_rows),
        train_tokens=sum(len(r["input_ids"]) for r in train_rows),
        target_tokens=sum(sum(r["completion_mask"]) for r in train_rows),
        total_steps=steps,
        device=device,
    )
    base_eval = _base_eval_loss(trainer, run_dir, bool(eval_rows))
    last = get_last_checkpoint(str(checkpoints)) if resume and checkpoints.is_dir() else None
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=last)
    if progress.stop_requested:
        return {"interrupted": True, "step": trainer.state.global_step}
    seconds = time.perf_counter() - started
    adapter_eval = _final_eval_loss(trainer) if eval_rows else None
    model.save_pretrained(run_dir / ADAPTER_DIR, safe_serialization=True)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    eval_losses = [
        {"epoch": entry["epoch"], "eval_loss": entry["eval_loss"]}
        for entry in trainer.state.log_history
        if "eval_loss" in entry
    ]
    result = {
        "resumed_from": last,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_loss": output.training_loss,
        "final_loss": losses[-1] if losses else None,
        "loss_curve": losses,
        "eval_losses": eval_losses,
        "heldout_loss_base": base_eval,
        "heldout_loss_adapter": adapter_eval,
        "train_seconds": round(seconds, 1),
        "tokens_per_s": round(progress.tokens_done / seconds, 1) if seconds else None,
        "device": device,
        "peak_rss_mb": _peak_rss_mb(),
    }
    (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))
    return result


def _final_eval_loss(trainer) -> float:
    """The held-out loss of the finished adapter: the last epoch's evaluation when it ran at the
    final step, else a new one."""
    last = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    if last and last[-1].get("step") == trainer.state.global_step:
        return last[-1]["eval_loss"]
    return trainer.evaluate()["eval_loss"]


def _base_eval_loss(trainer, run_dir: Path, has_eval: bool) -> float | None:
    """Held-out loss of the base model: the new LoRA's B is zero, so the model still equals the
    base before the first step. Kept in the run directory, so a resumed run reports the same."""
    if not has_eval:
        return None
    path = run_dir / BASE_EVAL_FILE
    if path.is_file():
        return json.loads(path.read_text())["eval_loss"]
    loss = trainer.evaluate()["eval_loss"]
    path.write_text(json.dumps({"eval_loss": loss}))
    return loss


def _stop_on_signals(progress: _Progress) -> None:
    def request_stop(signum, frame):
        progress.stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m sotopia_pi.training.worker RUN_DIR [--resume]", file=sys.stderr)
        return 2
    global _events_log
    run_dir = Path(argv[0])
    _events_log = run_dir / EVENTS_FILE
    try:
        result = train(run_dir, resume="--resume" in argv[1:])
    except Exception as error:  # the launcher shows this message; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        emit("error", message=f"{type(error).__name__}: {error}")
        return 1
    if result.get("interrupted"):
        emit("interrupted", step=result["step"])
        return INTERRUPTED_EXIT
    emit("done", result=result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
