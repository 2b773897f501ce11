"""``SampleSelectionConfig``: the settings of selection by samples (:mod:`gan_rl.eval.sample_selection`).

Apart from the callback so that it imports neither torch nor transformers: the recipe's
``sample_selection:`` section is built from it when the recipe is read, and a bad value is one line within
a second, before any library loads (``gan-rl check`` included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gan_rl.errors import ConfigError
from gan_rl.utils.fields import StrictSchema


@dataclass
class SampleSelectionConfig(StrictSchema):
    """When and how a run scores its own samples against real responses to select a checkpoint.

    Its types are checked by its own :meth:`validate` (which takes numpy's numbers too); as the recipe's
    ``sample_selection:`` section it is also read with :mod:`gan_rl.utils.fields`' rules (:class:`StrictSchema`).

    The defaults cost, per evaluation, 64 sampled responses of at most 32 new tokens (4 ``generate`` calls
    of 16) plus a logistic regression on their n-grams (about 1 s of CPU): for SmolLM2-135M on 2 CPU cores
    roughly 10-15 s in bfloat16 and 15-20 s in float32, about one or two SFT steps, so ``eval_steps`` of
    a few tens of steps keeps the overhead to a few percent.
    """

    eval_steps: int = field(
        default=50,
        metadata={"help": "Evaluate every this many optimizer steps (and at the run's last step)."},
    )
    prompts: int = field(
        default=64,
        metadata={
            "help": "How many validation prompts are sampled at every evaluation: the same ones each time, "
            "drawn once with `seed` (all of them when there are fewer). At least `folds`."
        },
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold, in (0, 1]."})
    max_new_tokens: int = field(default=32, metadata={"help": "Longest sampled response, in tokens."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per `generate` call."})
    folds: int = field(
        default=5,
        metadata={"help": "Cross-validation folds of the two-sample test (as `evaluate.folds`), at least 2."},
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "Which prompts, the sampling and the two-sample test's folds: the same at every "
            "evaluation, so scores differ only because the weights did."
        },
    )
    at_start: bool = field(
        default=True,
        metadata={
            "help": "Also evaluate the starting model (step 0), so that a run which never improves on it "
            "selects it."
        },
    )

    def __post_init__(self) -> None:
        try:
            self.validate()
        except ValueError as exc:
            raise ConfigError(type(self).__name__, str(exc)) from None

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field (``field: expected ..., got ...``)."""

        def integer(value: Any) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        def number(value: Any) -> bool:
            return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)

        checks = [
            ("eval_steps", integer(self.eval_steps) and self.eval_steps >= 1, "an integer, 1 or more"),
            ("folds", integer(self.folds) and self.folds >= 2, "an integer, at least 2"),
            (
                "prompts",
                integer(self.prompts) and integer(self.folds) and self.prompts >= self.folds,
                f"an integer, at least folds ({self.folds})",
            ),
            (
                "temperature",
                number(self.temperature) and math.isfinite(self.temperature) and self.temperature > 0,
                "a positive number",
            ),
            ("top_p", number(self.top_p) and 0 < self.top_p <= 1, "a number in (0, 1]"),
            (
                "max_new_tokens",
                integer(self.max_new_tokens) and self.max_new_tokens >= 1,
                "an integer, 1 or more",
            ),
            ("batch_size", integer(self.batch_size) and self.batch_size >= 1, "an integer, 1 or more"),
            ("seed", integer(self.seed) and 0 <= self.seed < 2**32, "an integer in [0, 2**32)"),
            ("at_start", isinstance(self.at_start, bool), "true or false"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}.")
