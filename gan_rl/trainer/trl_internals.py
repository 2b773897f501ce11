"""The one place that reaches into TRL's private state, and what gan-rl must know of TRL's sampling cycle."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def metric_logger(trainer: Any) -> Callable[[str, float], None] | None:
    """A function that adds ``value`` under ``name`` to the trainer's metrics of the current logging step,
    or None for a trainer without TRL's metrics.

    TRL's trainers average ``_metrics["train"][name]`` at every log and send it to every ``report_to``
    backend; it is private, and this is the one place that touches it (tests/cli/test_algorithms.py fails
    when TRL changes it). The public ``log_metric`` TRL hands to reward functions is flushed at the next
    generation only, too late for the discriminator's rounds and the SFT term, which run after it.
    """
    metrics = getattr(trainer, "_metrics", None)
    if metrics is None:
        return None

    def log(name: str, value: float) -> None:
        metrics["train"][name].append(value)

    return log


def generation_cycle(args: Any) -> int:
    """TRL's GRPO/RLOO trainers generate once per ``steps_per_generation x num_iterations`` micro-steps and
    reuse the samples in between (in memory only): the length of that cycle in optimizer steps (1 for
    trainers without those settings, such as SFT)."""
    accumulation = max(int(getattr(args, "gradient_accumulation_steps", 1) or 1), 1)
    per_generation = int(getattr(args, "steps_per_generation", None) or accumulation)
    every = per_generation * max(int(getattr(args, "num_iterations", 1) or 1), 1)
    return every // math.gcd(every, accumulation)


def at_generation_boundary(args: Any, global_step: int) -> bool:
    """Whether TRL's GRPO/RLOO trainers sample afresh right after optimizer step ``global_step``."""
    return global_step % generation_cycle(args) == 0


def save_steps_problem(args: Any) -> str | None:
    """Why ``args.save_steps`` would write checkpoints inside TRL's generation cycle, or None.

    GRPO/RLOO keep the samples of a cycle in memory only, so a run resumed from a checkpoint inside one
    samples afresh: another run than the uninterrupted one. A fractional ``save_steps`` (a share of the
    run) and other save strategies are not judged. The text follows the number of steps in a message.
    """
    strategy = getattr(args, "save_strategy", "no")
    save_steps = getattr(args, "save_steps", None)
    if getattr(strategy, "value", strategy) != "steps" or not isinstance(save_steps, (int, float)):
        return None
    cycle = generation_cycle(args)
    if save_steps < 1 or int(save_steps) % cycle == 0:
        return None
    return (
        f"puts checkpoints inside TRL's generation cycle (steps_per_generation "
        f"{getattr(args, 'steps_per_generation', None)} x num_iterations {getattr(args, 'num_iterations', 1)} "
        f"micro-steps, gradient_accumulation_steps {getattr(args, 'gradient_accumulation_steps', 1)}): a run "
        f"resumed there would sample afresh, not continue; use a multiple of {cycle}"
    )
