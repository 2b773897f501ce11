"""RLGAF's differentiable path: the generator trained through Gumbel-softmax relaxed tokens."""

from gan_rl.gumbel.config import GumbelConfig
from gan_rl.gumbel.trainer import GumbelTrainer

__all__ = ["GumbelConfig", "GumbelTrainer"]
