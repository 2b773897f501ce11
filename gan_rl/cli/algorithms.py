"""The algorithms a run can use: each a config class and a trainer class (TRL's, or gan_rl's own).

One registry, read by the recipe (which TRL config the ``trainer`` section builds, and which fields belong
to another algorithm) and by the run (which trainer to build). A new algorithm is one more entry here
plus its own recipe section (as ``ppo:`` and ``reinforce:`` are) and a command in :mod:`gan_rl.cli.main`; the
trainer must take ``reward_funcs`` and ``real_response_loss`` and keep TRL's ``_metrics`` (see
:func:`gan_rl.trainer.trl_internals.metric_logger`).

Why GRPOTrainer for ``ppo``: TRL removed its critic-based PPOTrainer in 1.13. GRPOTrainer keeps PPO's
clipped surrogate objective (``epsilon``), its several optimisation epochs per batch of samples
(``num_iterations``) and a KL penalty to the reference model (``beta``); the value network is replaced by
a group baseline (the mean reward of ``num_generations`` samples per prompt). ``reinforce`` is
RLOOTrainer: REINFORCE with a leave-one-out baseline, the Monte Carlo policy gradient of RLGAF. ``gumbel``
is RLGAF's other path, which TRL does not have: :class:`gan_rl.gumbel.trainer.GumbelTrainer`, back-propagation
through Gumbel-softmax tokens on transformers' Trainer.

TRL is imported when a class is asked for, not with this module, so a recipe names its algorithm
without loading TRL.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Algorithm:
    """An algorithm's name (its command and recipe section), its config class and its trainer class."""

    name: str
    config: str  # a class of ``config_module``, by name
    trainer: str  # a class of ``trainer_module``, by name: a trainer that takes ``real_response_loss``
    help: str = ""  # the command's help text (``gan-rl NAME --help``)
    config_module: str = "trl"
    trainer_module: str = "gan_rl.trainer.trainers"
    # Other command names for it (TRL's: ``grpo`` for ``ppo``); the recipe section keeps ``name``.
    aliases: tuple[str, ...] = ()

    def config_class(self) -> type:
        """The config class (a ``TrainingArguments`` dataclass): what the recipe's ``trainer`` section (and
        this algorithm's own) builds."""
        return getattr(importlib.import_module(self.config_module), self.config)

    def trainer_class(self) -> type:
        """The trainer class: TRL's (or gan_rl's own), carrying the SFT loss term
        (:mod:`gan_rl.trainer.sft_term`)."""
        return getattr(importlib.import_module(self.trainer_module), self.trainer)


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm(
            "ppo",
            config="GRPOConfig",
            trainer="AdversarialGRPOTrainer",
            aliases=("grpo",),
            help="PPO-style clipped policy optimisation (TRL GRPOTrainer) with KL to the reference model, "
            "rewarded by the discriminator. RECIPE is a YAML file.",
        ),
        Algorithm(
            "reinforce",
            config="RLOOConfig",
            trainer="AdversarialRLOOTrainer",
            aliases=("rloo",),
            help="REINFORCE with a leave-one-out baseline (TRL RLOOTrainer), rewarded by the discriminator. "
            "RECIPE is a YAML file.",
        ),
        Algorithm(
            "gumbel",
            config="GumbelConfig",
            trainer="GumbelTrainer",
            config_module="gan_rl.gumbel",
            trainer_module="gan_rl.gumbel",
            help="Back-propagation through Gumbel-softmax relaxed tokens (RLGAF's differentiable path): the "
            "generator minimises -log D(G(x)) on a transformers Trainer; the discriminator trains on the hard "
            "samples as in ppo. RECIPE is a YAML file.",
        ),
    )
}


def get_algorithm(name: str) -> Algorithm:
    """The registered algorithm called ``name``; a :class:`gan_rl.errors.RecipeError` listing the valid
    names otherwise."""
    for algorithm in ALGORITHMS.values():
        if name in algorithm.aliases:
            return algorithm
    if name not in ALGORITHMS:
        from gan_rl.errors import RecipeError

        raise RecipeError(f"algorithm: {name!r} is not valid; valid: {', '.join(ALGORITHMS)}.")
    return ALGORITHMS[name]
