"""What a training run is asked to do. Defaults follow SOTOPIA-pi's recipe (LoRA r=8, alpha 32,
dropout 0.1, lr 5e-5, cosine schedule with 3% warmup, no weight decay), except the LoRA targets:
SOTOPIA-pi adapted q_proj and v_proj of a 7B model; a 135M model learns the action format far
faster with every projection adapted, so `--targets` defaults to all seven (pass q_proj,v_proj
for the paper's setting)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot: str = Field(description="the curated snapshot to train on")
    base: str = Field(default="embedded", description="a model name transformers can load: embedded, hf:DIR, hf:DIR#gguf=FILE")
    name: str = Field(description="the adapter's name in the registry")
    task: Literal["agent", "judge"] = Field(
        default="agent", description="agent: learn the agents' actions; judge: learn the terminal evaluations"
    )
    layout: Literal["conversation", "turn"] = "conversation"
    epochs: float = Field(default=2.0, gt=0)
    learning_rate: float = Field(default=5e-5, gt=0)
    lora_rank: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.1, ge=0, lt=1)
    targets: list[str] = Field(default_factory=lambda: list(ALL_PROJECTIONS))
    batch_size: int = Field(default=1, ge=1)
    grad_accumulation: int = Field(default=4, ge=1)
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    scheduler: str = "cosine"
    max_length: int = Field(default=2048, ge=32, description="tokens; longer conversations are cut after the last answer that fits")
    heldout_fraction: float = Field(default=0.1, ge=0, lt=1, description="share of the snapshot's episodes kept out for eval loss")
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(default=None, ge=1, description="torch threads on CPU; default: all cores")
    save_every: int = Field(default=20, ge=1, description="optimizer steps between checkpoints")
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many optimizer steps (smoke runs)")
    gradient_checkpointing: bool = False
    quantize_4bit: bool = Field(default=False, description="QLoRA: load the base in 4 bits (CUDA + bitsandbytes)")
    run_dir: Path | None = Field(default=None, description="where checkpoints and the log go; set by the launcher")

    def planned_steps(self, examples: int) -> int:
        """Optimizer steps for `examples` training sequences: every epoch, or `max_steps`."""
        if self.max_steps:
            return self.max_steps
        per_epoch = math.ceil(examples / (self.batch_size * self.grad_accumulation))
        return max(1, math.ceil(per_epoch * self.epochs))

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, targets: list[str]) -> list[str]:
        unknown = sorted(set(targets) - set(ALL_PROJECTIONS))
        if unknown or not targets:
            raise ValueError(f"LoRA targets must be among {', '.join(ALL_PROJECTIONS)}; got {', '.join(unknown) or 'none'}")
        return targets
