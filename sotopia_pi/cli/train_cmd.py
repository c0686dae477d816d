"""`sotopia-pi train`: LoRA SFT of a model on a curated snapshot, in its own process."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .app import app, emit_json, fail, open_store, progress


@app.command("train")
def train_command(
    snapshot: Annotated[str, typer.Option("--snapshot", help="The curated snapshot to train on (sotopia-pi curate snapshots).")],
    name: Annotated[str, typer.Option("--name", help="The adapter's name in the registry.")],
    base: Annotated[str, typer.Option("--base", help="embedded, hf:DIR or hf:DIR#gguf=FILE.")] = "embedded",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run NAME from its last checkpoint.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    task: Annotated[str, typer.Option("--task", help="agent (the agents' actions) or judge (the terminal evaluations).")] = "agent",
    layout: Annotated[
        str, typer.Option("--layout", help="conversation (each side's episode once) or turn (one example per answer).")
    ] = "conversation",
    epochs: Annotated[float, typer.Option(help="Passes over the training examples.")] = 2.0,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate (cosine schedule).")] = 5e-5,
    rank: Annotated[int, typer.Option("--rank", help="LoRA rank.")] = 8,
    alpha: Annotated[int, typer.Option("--alpha", help="LoRA alpha.")] = 32,
    dropout: Annotated[float, typer.Option("--dropout", help="LoRA dropout.")] = 0.1,
    targets: Annotated[
        str, typer.Option("--targets", help="Comma-separated projections to adapt.")
    ] = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 1,
    grad_accumulation: Annotated[int, typer.Option("--grad-accumulation")] = 4,
    warmup_ratio: Annotated[float, typer.Option("--warmup-ratio")] = 0.03,
    max_length: Annotated[
        int,
        typer.Option("--max-length", help="Tokens per sequence; longer conversations are cut after the last answer that fits."),
    ] = 2048,
    heldout: Annotated[float, typer.Option("--heldout", help="Share of the snapshot's episodes kept out for the eval loss.")] = 0.1,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for torch (default: all cores).")] = None,
    save_every: Annotated[int, typer.Option("--save-every", help="Optimizer steps between checkpoints.")] = 20,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps (smoke runs).")] = None,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing", help="Less memory, about a quarter slower.")] = False,
    quantize_4bit: Annotated[bool, typer.Option("--4bit", help="QLoRA: load the base in 4 bits (CUDA and bitsandbytes).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON document.")] = False,
) -> None:
    """Fine-tune a LoRA adapter on a snapshot; convert and register it when it finishes.

    Ctrl-C saves a checkpoint and stops; `--resume` continues from it."""
    from pydantic import ValidationError

    from ..dataset.errors import SnapshotError
    from ..training.config import TrainConfig
    from ..training.launcher import TrainingError, finish_training, launch_training, plan_training

    try:
        config = TrainConfig(
            snapshot=snapshot, base=base, name=name, task=task, layout=layout, epochs=epochs, learning_rate=learning_rate,
            lora_rank=rank, lora_alpha=alpha, lora_dropout=dropout, targets=[t.strip() for t in targets.split(",") if t.strip()],
            batch_size=batch_size, grad_accumulation=grad_accumulation, warmup_ratio=warmup_ratio, max_length=max_length,
            heldout_fraction=heldout, seed=seed, device=device, threads=threads, save_every=save_every,
            max_steps=max_steps, gradient_checkpointing=gradient_checkpointing, quantize_4bit=quantize_4bit,
        )  # fmt: skip
    except ValidationError as error:
        raise fail(f"invalid training option: {error.errors()[0]['msg']}")
    store = open_store()
    try:
        plan = plan_training(store, config, resume=resume)
    except (TrainingError, SnapshotError, ValueError, OSError) as error:
        raise fail(str(error))
    progress(
        f"{'resuming' if resume else 'training'} {name} on {snapshot}: {plan.train_examples} examples "
        f"({plan.answers} answers, {plan.train_tokens} tokens), {plan.eval_examples} held out, "
        f"{plan.steps} steps, about {plan.estimated_seconds / 60:.0f} min on 2 CPU cores"
    )
    run = launch_training(plan, resume=resume, threads=threads)
    try:
        _follow(run, plan.steps, quiet=as_json)
    except KeyboardInterrupt:
        progress("stopping: saving a checkpoint (Ctrl-C again to kill)...")
        run.cancel()
        try:
            _follow(run, plan.steps, quiet=True)
        except KeyboardInterrupt:
            run.kill()
    if run.interrupted:
        raise fail(f"interrupted; continue with: sotopia-pi train --snapshot {snapshot} --name {name} --resume", code=130)
    if run.error:
        raise fail(f"training failed: {run.error} (log: {run.log_path})")
    try:
        record = finish_training(store, plan)
    except (TrainingError, ValueError, OSError) as error:
        raise fail(str(error))
    document = record.model_dump(mode="json") if hasattr(record, "model_dump") else record
    if as_json:
        emit_json(document)
        return
    metrics = document.get("metrics", {})
    progress(
        f"adapter {document.get('name')} v{document.get('version')} registered; held-out loss "
        f"{_fmt(metrics.get('heldout_loss_base'))} (base) -> {_fmt(metrics.get('heldout_loss_adapter'))} (adapter)"
    )


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


def _follow(run, total_steps: int, *, quiet: bool) -> None:
    """Show the worker's progress on stderr: a bar with tokens/s, ETA, loss and eval loss."""
    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} tok/s  loss {task.fields[loss]}  eval {task.fields[eval]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False, disable=quiet, redirect_stdout=False) as bar:
        task = bar.add_task("train", total=total_steps, rate="-", loss="-", eval="-")
        for event in run.events():
            fields = event.model_dump()
            if event.event == "start":
                bar.update(task, total=fields.get("total_steps") or total_steps)
            elif event.event == "step":
                bar.update(task, completed=fields["step"], rate=f"{fields.get('tokens_per_s', 0):.0f}")
            elif event.event == "loss":
                bar.update(task, loss=f"{fields['loss']:.3f}")
            elif event.event == "eval":
                bar.update(task, eval=f"{fields['eval_loss']:.3f}")
