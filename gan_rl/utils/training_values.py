"""Values of a trainer config (transformers' ``TrainingArguments`` and the TRL / gan_rl configs built on
it) that would be refused only later, or not at all while nothing is trained.

transformers and TRL accept ``learning_rate: -1`` (torch's Adam refuses it when the optimizer is built,
after the models have loaded), ``max_steps: 0`` (one step is trained and the run says "completed"),
``num_generations: 0`` (a ``ZeroDivisionError`` inside TRL's own check), ``seed: -1`` (numpy refuses it
when the trainer seeds itself) or ``temperature: 0`` (refused at the first generation). These rules
refuse them where the config is built, so that a recipe (and ``gan-rl check``) or a Python config says
which field is wrong and what would be valid. Only fields the config has are checked, and only rules
that are clear: TRL's own checks that already end in one clean error are left to TRL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

SEED_LIMIT = 2**32  # numpy's seeds (transformers' set_seed seeds numpy too): 0 to 2**32 - 1


def _finite(v: Any) -> bool:
    return math.isfinite(v)


def _strategy(values: Mapping[str, Any], name: str) -> str:
    """A save/eval/logging strategy as its string (transformers stores an enum, a recipe gives text)."""
    value = values.get(name)
    return str(getattr(value, "value", value))


# (field, whether a value is valid given all values, what would be valid); a field the config lacks, or a
# value of the wrong type (left to the type checks), is skipped.
Rule = tuple[str, Callable[[Any, Mapping[str, Any]], bool], str]

RULES: list[Rule] = [
    ("learning_rate", lambda v, _: _finite(v) and v >= 0, "0 or a positive finite number"),
    ("weight_decay", lambda v, _: _finite(v) and v >= 0, "0 or a positive finite number"),
    ("adam_beta1", lambda v, _: 0 <= v < 1, "in [0, 1)"),
    ("adam_beta2", lambda v, _: 0 <= v < 1, "in [0, 1)"),
    ("adam_epsilon", lambda v, _: _finite(v) and v >= 0, "0 or a positive finite number"),
    (
        "max_steps",
        lambda v, _: v == -1 or v >= 1,
        "a positive number of steps, or -1 (train num_train_epochs)",
    ),
    (
        "num_train_epochs",
        lambda v, vs: vs.get("max_steps", -1) >= 1 or (_finite(v) and v > 0),
        "a positive number of epochs when max_steps is -1",
    ),
    ("per_device_train_batch_size", lambda v, _: v >= 1, "at least 1"),
    ("per_device_eval_batch_size", lambda v, _: v >= 1, "at least 1"),
    ("gradient_accumulation_steps", lambda v, _: v >= 1, "at least 1"),
    ("dataloader_num_workers", lambda v, _: v >= 0, "0 or more"),
    ("seed", lambda v, _: 0 <= v < SEED_LIMIT, "in [0, 2**32 - 1] (numpy's seeds)"),
    ("data_seed", lambda v, _: v is None or 0 <= v < SEED_LIMIT, "in [0, 2**32 - 1] (numpy's seeds)"),
    # transformers takes steps % save_steps (a ZeroDivisionError at step 1 for 0); < 1 is a fraction.
    (
        "save_steps",
        lambda v, vs: _strategy(vs, "save_strategy") != "steps" or v > 0,
        "positive when save_strategy is 'steps'",
    ),
    (
        "logging_steps",
        lambda v, vs: _strategy(vs, "logging_strategy") != "steps" or v > 0,
        "positive when logging_strategy is 'steps'",
    ),
    (
        "eval_steps",
        lambda v, vs: v is None or _strategy(vs, "eval_strategy") != "steps" or v > 0,
        "positive when eval_strategy is 'steps' (or unset: logging_steps)",
    ),
    # Generation (TRL's GRPO/RLOO and gan_rl's gumbel).
    ("max_completion_length", lambda v, _: v is None or v >= 1, "at least 1 token"),
    ("temperature", lambda v, _: _finite(v) and v > 0, "a positive finite number"),
    ("top_p", lambda v, _: 0 < v <= 1, "in (0, 1]"),
    # 0 repeats no batch: the sampler yields nothing and no policy step runs.
    ("num_iterations", lambda v, _: v >= 1, "at least 1"),
    ("steps_per_generation", lambda v, _: v is None or v >= 1, "at least 1"),
    ("generation_batch_size", lambda v, _: v is None or v >= 1, "at least 1"),
    # SFT
    ("max_length", lambda v, _: v is None or v >= 1, "at least 1 token, or null (no truncation)"),
]


def training_value_problem(values: Mapping[str, Any], min_generations: int = 1) -> tuple[str, str] | None:
    """(field, ``expected X, got Y.``) for the first value of a trainer config that would fail later, or
    train nothing while the run reports success; None when all is well.

    ``values``: the config's fields (its defaults updated with what was given, or ``vars(config)``).
    ``min_generations``: the fewest ``num_generations`` the algorithm takes (2 for TRL's group baselines,
    whose own check divides by it first).
    """
    rules = [
        *RULES,
        ("num_generations", lambda v, _: v >= min_generations, f"at least {min_generations}"),
    ]
    for name, ok, expected in rules:
        if name not in values:
            continue
        value = values[name]
        if isinstance(value, bool):
            continue  # a bool where a number belongs: the type checks name it
        try:
            valid = ok(value, values)
        except TypeError:
            continue
        if not valid:
            return name, f"expected {expected}, got {value!r}."
    return None
