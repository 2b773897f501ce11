"""gan-rl: adversarial reinforcement learning for LLMs on top of TRL.

A discriminator learns to tell real responses from the generator's own; its judgement is the reward for
TRL's GRPOTrainer (``gan-rl ppo``) or RLOOTrainer (``gan-rl reinforce``), and a callback retrains it
between policy updates. ``SpinTrainer`` (``gan-rl spin``) plays the same game with an implicit
discriminator, the policy's log-ratio to its previous iterate, on TRL's DPOTrainer; the
``SampleSelectionCallback`` keeps, in any trainer, the checkpoint whose samples are closest to the data.

The Python API (docs/python-api.md), imported lazily as TRL does, so ``import gan_rl`` loads neither
torch nor TRL::

    from gan_rl import Adversary, AdversarialGRPOTrainer, DiscriminatorConfig, adversarial_dataset

The command line's own objects (recipes, ``run``) live in ``gan_rl.cli``, not here.

Layers, each importing only those below it: ``cli`` (recipes, commands) -> ``trainer`` / ``gumbel`` /
``eval`` -> ``discriminator`` -> ``utils`` / ``types`` / ``errors``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "DiscriminatorConfig": "gan_rl.discriminator.config",
    "DiscriminatorRewardConfig": "gan_rl.discriminator.config",
    "Adversary": "gan_rl.trainer.adversary",
    "adversarial_dataset": "gan_rl.trainer.dataset",
    "AdversarialGRPOTrainer": "gan_rl.trainer.trainers",
    "AdversarialRLOOTrainer": "gan_rl.trainer.trainers",
    "RealResponseLoss": "gan_rl.trainer.sft_term",
    "GumbelConfig": "gan_rl.gumbel.config",
    "GumbelTrainer": "gan_rl.gumbel.trainer",
    "SpinConfig": "gan_rl.trainer.spin.config",
    "SpinTrainer": "gan_rl.trainer.spin.trainer",
    "SampleSelectionConfig": "gan_rl.eval.selection_config",
    "SampleSelectionCallback": "gan_rl.eval.sample_selection",
    "EvaluationConfig": "gan_rl.eval.evaluation",
    "evaluate_texts": "gan_rl.eval.evaluation",
    "save_evaluation": "gan_rl.eval.report",
    "Pair": "gan_rl.types",
    "TrainingError": "gan_rl.errors",
    "InputError": "gan_rl.errors",
}

__all__ = [
    "AdversarialGRPOTrainer",
    "AdversarialRLOOTrainer",
    "Adversary",
    "DiscriminatorConfig",
    "EvaluationConfig",
    "GumbelConfig",
    "GumbelTrainer",
    "InputError",
    "Pair",
    "RealResponseLoss",
    "DiscriminatorRewardConfig",
    "SampleSelectionCallback",
    "SampleSelectionConfig",
    "SpinConfig",
    "SpinTrainer",
    "TrainingError",
    "__version__",
    "adversarial_dataset",
    "evaluate_texts",
    "save_evaluation",
]

if TYPE_CHECKING:
    from gan_rl.discriminator.config import DiscriminatorConfig, DiscriminatorRewardConfig
    from gan_rl.errors import InputError, TrainingError
    from gan_rl.eval.evaluation import EvaluationConfig, evaluate_texts
    from gan_rl.eval.report import save_evaluation
    from gan_rl.eval.sample_selection import SampleSelectionCallback
    from gan_rl.eval.selection_config import SampleSelectionConfig
    from gan_rl.gumbel.config import GumbelConfig
    from gan_rl.gumbel.trainer import GumbelTrainer
    from gan_rl.trainer.adversary import Adversary
    from gan_rl.trainer.dataset import adversarial_dataset
    from gan_rl.trainer.sft_term import RealResponseLoss
    from gan_rl.trainer.spin import SpinConfig, SpinTrainer
    from gan_rl.trainer.trainers import AdversarialGRPOTrainer, AdversarialRLOOTrainer
    from gan_rl.types import Pair


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gan_rl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
