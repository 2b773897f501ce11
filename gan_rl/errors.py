"""The run's own failures, apart from bad input (:class:`gan_rl.errors.RecipeError`, exit code 2).

A :class:`TrainingError` is a run that went wrong while training (a non-finite discriminator loss, weight
or reward): the command line prints its one line and exits with code 1, and no ``run_summary.json`` is
written, so the run is never reported as completed. Earlier checkpoints are left as they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


class TrainingError(RuntimeError):
    """Training cannot go on; the message says where (step or round), what value, and the likely cause."""


def first_non_finite(values: Iterable[tuple[str, float]]) -> tuple[str, float] | None:
    """The first (name, value) that is NaN or infinite, else None."""
    for name, value in values:
        if not math.isfinite(value):
            return name, value
    return None


class RecipeError(ValueError):
    """A recipe (or its data) is wrong; the message names the field and what would be valid."""


class ConfigError(ValueError):
    """A config dataclass built with a bad field (``DiscriminatorConfig(learning_rate=-1)``): raised at
    construction, its message names the class and the field; ``detail`` is the part from the field on
    (which the recipe parser prefixes with the recipe section instead)."""

    def __init__(self, config: str, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{config}.{detail}")
