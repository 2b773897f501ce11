"""SPIN self-play fine-tuning (arXiv 2401.01335) and its snapshot variant (SODA) on TRL's DPOTrainer:
the real response of a prompt (chosen) against the policy's own sample (rejected), the reference the
policy at the start of each iteration."""

from gan_rl.trainer.spin.config import SpinConfig
from gan_rl.trainer.spin.trainer import SpinOutput, SpinTrainer

__all__ = ["SpinConfig", "SpinOutput", "SpinTrainer"]
