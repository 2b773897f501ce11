"""The run's own failures, and bad input (:class:`InputError` from the library, :class:`RecipeError` from the
command line, exit code 2).

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
    """A recipe (or its data) is wrong; the message names the field and what would be valid. Raised by the
    command line (``gan_rl.cli``) only: the library raises :class:`InputError`."""


class InputError(ValueError):
    """Bad input to the library: an argument, a config field or a checkpoint that does not fit, as one line
    naming it in the terms of whoever gave it.

    The message is a ``str.format`` template. Its term fields (the keys of :attr:`PYTHON_TERMS`) are how a
    Python user names things (``resume_from_checkpoint``, ``DiscriminatorConfig``); the command line renders
    the same template with its flags and recipe keys (``gan_rl.cli.main.CLI_TERMS``).
    ``values`` fill the rest. ``str(error)`` is the Python rendering.
    """

    PYTHON_TERMS: dict[str, str] = {
        "resume": "resume_from_checkpoint",
        "resume_earlier": "resume_from_checkpoint=<an earlier checkpoint>",
        "fresh_discriminator": "fresh_discriminator=True (Adversary.build)",
        "discriminator": "DiscriminatorConfig",
        "discriminator_config": "the DiscriminatorConfig",
        "generator_lora": "a LoRA peft_config for the trainer",
        "gumbel": "GumbelTrainer",
    }

    def __init__(self, template: str, **values: object) -> None:
        self.template = template
        self.values = values
        super().__init__(self.render(self.PYTHON_TERMS))

    def render(self, terms: dict[str, str]) -> str:
        """The message with ``terms`` for the term fields."""
        return self.template.format(**{**terms, **self.values})


class ConfigError(ValueError):
    """A config dataclass built with a bad field (``DiscriminatorConfig(learning_rate=-1)``): raised at
    construction, its message names the class and the field; ``detail`` is the part from the field on
    (which the recipe parser prefixes with the recipe section instead)."""

    def __init__(self, config: str, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{config}.{detail}")
