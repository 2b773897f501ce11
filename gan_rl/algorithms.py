"""The algorithms a run can use: each a config class and a trainer class (TRL's, or gan_rl's own).

One registry, read by the recipe (which TRL config the ``trainer`` section builds, and which fields belong
to another algorithm) and by the run (which trainer to build). A new algorithm is one more entry here
plus its own recipe section (as ``ppo:`` and ``reinforce:`` are) and a command in :mod:`gan_rl.cli`; the
trainer must take ``reward_funcs`` and keep TRL's ``_metrics`` (see :func:`metric_logger`).

Why GRPOTrainer for ``ppo``: TRL removed its critic-based PPOTrainer in 1.13. GRPOTrainer keeps PPO's
clipped surrogate objective (``epsilon``), its several optimisation epochs per batch of samples
(``num_iterations``) and a KL penalty to the reference model (``beta``); the value network is replaced by
a group baseline (the mean reward of ``num_generations`` samples per prompt). ``reinforce`` is
RLOOTrainer: REINFORCE with a leave-one-out baseline, the Monte Carlo policy gradient of RLGAF. ``gumbel``
is RLGAF's other path, which TRL does not have: :class:`gan_rl.gumbel.GumbelTrainer`, back-propagation
through Gumbel-softmax tokens on transformers' Trainer.

TRL is imported when a class is asked for, not with this module, so a recipe names its algorithm
without loading TRL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Algorithm:
    """An algorithm's name (its command and recipe section) and the TRL classes that implement it."""

    name: str
    config: str  # a class of ``module``, by name
    trainer: str
    help: str = ""  # the command's help text (``gan-rl NAME --help``)
    # Where the classes live: TRL's package, or a gan_rl module for an algorithm TRL does not have.
    module: str = "trl"

    def _lookup(self, name: str) -> type:
        import importlib

        return getattr(importlib.import_module(self.module), name)

    def config_class(self) -> type:
        """The config class (a ``TrainingArguments`` dataclass): what the recipe's ``trainer`` section (and
        this algorithm's own) builds."""
        return self._lookup(self.config)

    def base_trainer_class(self) -> type:
        """The trainer class as its module defines it."""
        return self._lookup(self.trainer)

    def trainer_class(self) -> type:
        """The trainer class, able to add the SFT loss term (:mod:`gan_rl.sft_term`) to its loss."""
        from gan_rl.sft_term import RealResponseLossMixin

        base = self.base_trainer_class()
        return type(f"GanRL{base.__name__}", (RealResponseLossMixin, base), {})


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            "ppo",
            config="GRPOConfig",
            trainer="GRPOTrainer",
            help="PPO-style clipped policy optimisation (TRL GRPOTrainer) with KL to the reference model, "
            "rewarded by the discriminator. RECIPE is a YAML file.",
        ),
        Algorithm(
            "reinforce",
            config="RLOOConfig",
            trainer="RLOOTrainer",
            help="REINFORCE with a leave-one-out baseline (TRL RLOOTrainer), rewarded by the discriminator. "
            "RECIPE is a YAML file.",
        ),
        Algorithm(
            "gumbel",
            config="GumbelConfig",
            trainer="GumbelTrainer",
            module="gan_rl.gumbel",
            help="Back-propagation through Gumbel-softmax relaxed tokens (RLGAF's differentiable path): the "
            "generator minimises -log D(G(x)) on a transformers Trainer; the discriminator trains on the hard "
            "samples as in ppo. RECIPE is a YAML file.",
        ),
    )
}


def get_algorithm(name: str) -> Algorithm:
    """The registered algorithm called ``name``; a :class:`gan_rl.recipe.RecipeError` listing the valid
    names otherwise."""
    if name not in ALGORITHMS:
        from gan_rl.recipe import RecipeError  # the recipe imports this module: import on use

        raise RecipeError(f"algorithm: {name!r} is not valid; valid: {', '.join(ALGORITHMS)}.")
    return ALGORITHMS[name]


def metric_logger(trainer: Any) -> Callable[[str, float], None] | None:
    """A function that adds ``value`` under ``name`` to the trainer's metrics of the current logging step,
    or None for a trainer without TRL's metrics.

    TRL's trainers average ``_metrics["train"][name]`` at every log and send it to every ``report_to``
    backend; it is private, and this is the one place that touches it (tests/test_algorithms.py fails
    when TRL changes it). The public ``log_metric`` TRL hands to reward functions is flushed at the next
    generation only, too late for the discriminator's rounds and the SFT term, which run after it.
    """
    metrics = getattr(trainer, "_metrics", None)
    if metrics is None:
        return None

    def log(name: str, value: float) -> None:
        metrics["train"][name].append(value)

    return log
