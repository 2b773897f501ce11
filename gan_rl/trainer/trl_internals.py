"""The one place that reaches into TRL's private state."""

from __future__ import annotations

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
