"""Training throughput: our trainer (conversation layout) against a plain TRL SFTTrainer run on
per-turn prompt-completion examples of the same snapshot, same model, same threads.

    SOTOPIA_PI_HOME=... .venv/bin/python bench/training_throughput.py --snapshot NAME [--steps 6] [--threads 2]

Prints, for each: tokens/s (every token the model reads), answers learned per second (agent
answers carrying the loss), peak RSS of the process. Targets (issue 10): tokens/s at least 1.0x
of plain TRL, answers/s at least 5x (from the conversation layout).

Both runs use the embedded SmolLM2 (dequantized), LoRA r=8 on all projections, batch 1, and the
first `--steps` optimizer steps after one warm-up step; examples are taken in the same order.
"""

from __future__ import annotations

import argparse
import gc
import resource
import time

from sotopia_pi.dataset.export import snapshot_examples
from sotopia_pi.dataset.snapshots import load_snapshot
from sotopia_pi.store import Store
from sotopia_pi.training.config import TrainConfig
from sotopia_pi.training.examples import build_training_examples, tokenize_examples
from sotopia_pi.training.worker import load_base, lora_config


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(trainer, steps: int) -> float:
    """Seconds for `steps` optimizer steps after one warm-up step."""
    marks: list[float] = []
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

    trainer.add_callback(Clock())
    trainer.train()
    return marks[-1] - marks[0]


def ours(rows: list[dict], steps: int, threads: int):
    from datasets import Dataset
    from peft import get_peft_model
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_base("embedded", "cpu", False)
    model = get_peft_model(model, lora_config(TrainConfig(snapshot="x", name="x")))
    args = SFTConfig(
        output_dir="/tmp/bench-ours", max_steps=steps + 1, per_device_train_batch_size=1, completion_only_loss=True,
        max_length=None, logging_steps=1000, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
        learning_rate=5e-5,
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows[: steps + 1]), processing_class=tokenizer)
    return time_steps(trainer, steps)


def plain_trl(examples, steps: int):
    from datasets import Dataset
    from peft import get_peft_model
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_base("embedded", "cpu", False)
    model = get_peft_model(model, lora_config(TrainConfig(snapshot="x", name="x")))
    rows = [
        {"prompt": [m.model_dump() for m in e.prompt], "completion": [{"role": "assistant", "content": e.completion}]}
        for e in examples[: steps + 1]
    ]
    args = SFTConfig(
        output_dir="/tmp/bench-trl", max_steps=steps + 1, per_device_train_batch_size=1, max_length=None,
        logging_steps=1000, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True, learning_rate=5e-5,
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    tokenized = trainer.train_dataset
    seconds = time_steps(trainer, steps)
    tokens = sum(len(tokenized[i]["input_ids"]) for i in range(1, steps + 1))
    return seconds, tokens


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--snapshot", required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    store = Store()
    per_turn = snapshot_examples(load_snapshot(store, options.snapshot))
    _, tokenizer = load_base("embedded", "cpu", False)
    conversations = build_training_examples(per_turn, "conversation")
    tokenized, _ = tokenize_examples(tokenizer, conversations, 2048)
    rows = [{"input_ids": t.input_ids, "completion_mask": t.completion_mask} for t in tokenized]
    steps = options.steps
    our_seconds = ours(rows, steps, options.threads)
    our_tokens = sum(len(r["input_ids"]) for r in rows[1 : steps + 1])
    our_answers = sum(len(t.answer_spans) for t in tokenized[1 : steps + 1])
    peak_ours = _peak_mb()
    gc.collect()
    trl_seconds, trl_tokens = plain_trl(per_turn, steps)
    trl_answers = steps  # one answer per per-turn example
    print(
        f"snapshot {options.snapshot}: {len(per_turn)} per-turn examples, {len(tokenized)} conversations; "
        f"{steps} timed steps, {options.threads} threads"
    )
    for label, tokens, answers, seconds in (
        ("ours (conversation layout):", our_tokens, our_answers, our_seconds),
        ("plain TRL (per-turn):      ", trl_tokens, trl_answers, trl_seconds),
    ):
        print(
            f"{label} {tokens / seconds:8.1f} tokens/s  {answers / seconds:6.3f} answers/s  "
            f"({tokens} tokens, {answers} answers, {seconds:.1f} s)"
        )
    token_ratio = our_tokens / our_seconds / (trl_tokens / trl_seconds)
    answer_ratio = our_answers / our_seconds / (trl_answers / trl_seconds)
    print(f"ratio: tokens/s {token_ratio:.2f}x, answers/s {answer_ratio:.2f}x")
    print(f"peak RSS: {peak_ours:.0f} MB after ours, {_peak_mb():.0f} MB after both")


if __name__ == "__main__":
    main()
