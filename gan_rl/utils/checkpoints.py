"""The layout of a run's checkpoints, in one place for every module that writes or reads one.

A checkpoint is transformers' ``OUTPUT_DIR/checkpoint-N`` (the generator's weights, the trainer's state,
optimizer, scheduler and RNG states) plus gan_rl's ``discriminator/`` (its weights, optimizer and counters,
and one sample buffer per process). ``discriminator/`` is written under a ``.partial`` name and renamed into
place when complete, so a checkpoint's discriminator is whole or absent. The writers
(:mod:`gan_rl.trainer.callback`, :mod:`gan_rl.eval.sample_selection`, the CLI's stop signal) and the readers
(resume's completeness and corruption checks in :mod:`gan_rl.cli.outputs`) take every name from here.
"""

from __future__ import annotations

import re
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

# transformers' part.
CHECKPOINT_GLOB = f"{PREFIX_CHECKPOINT_DIR}-*"
CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
GENERATOR_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TRAINER_STATE = "trainer_state.json"  # written last by transformers: a checkpoint without it is unfinished
OPTIMIZER = "optimizer.pt"
# What a resume reads besides the generator's weights: the optimizer, scheduler, AMP scaler and each
# process's RNG state (checked when present).
TRAINER_STATE_FILES = (TRAINER_STATE, OPTIMIZER, "scheduler.pt", "scaler.pt")
RNG_STATE_GLOB = "rng_state*.pth"

# gan_rl's part.
DISCRIMINATOR_DIR = "discriminator"
# Written first, renamed when complete (the discriminator's folder, the selected model's).
PARTIAL_SUFFIX = ".partial"
DISCRIMINATOR_STATE = "state.json"
DISCRIMINATOR_WEIGHTS = "model.safetensors"
DISCRIMINATOR_OPTIMIZER = "optimizer.pt"
# What a checkpoint's discriminator/ holds that a resume reads (besides the per-process sample buffers).
DISCRIMINATOR_FILES = (DISCRIMINATOR_STATE, DISCRIMINATOR_WEIGHTS, DISCRIMINATOR_OPTIMIZER)
BUFFER_GLOB = "buffer.rank*.json"


def buffer_file_name(process: int) -> str:
    """The sample buffer of process ``process`` inside ``discriminator/``."""
    return f"buffer.rank{process}.json"


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    """``OUTPUT_DIR/checkpoint-STEP``, where transformers' Trainer saves step ``step``."""
    return Path(output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a ``checkpoint-N`` folder (None: not such a name)."""
    match = CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def has_checkpoints(output_dir: str | Path) -> bool:
    """Whether ``output_dir`` holds any ``checkpoint-N`` folder (a run that started)."""
    out = Path(output_dir)
    return out.is_dir() and any(out.glob(CHECKPOINT_GLOB))
