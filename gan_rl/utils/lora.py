"""LoRA settings and the one builder of peft's ``LoraConfig``, for the generator and a classifier.

Both recipe sections (``model.lora``, ``discriminator.lora``) take the same four fields; only their
defaults differ (a judge needs fewer adapter weights than the policy). peft is imported when a config is
built, so a recipe is validated without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gan_rl.utils.fields import CheckedConfig


@dataclass
class LoraSettings(CheckedConfig):
    """LoRA adapters on the generator (peft ``LoraConfig``)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"

    def validate(self) -> None:
        """Types, then what peft would refuse (or silently train nothing with) once the model loads."""
        super().validate()
        if self.r < 1:
            raise ValueError(f"r: expected a rank of at least 1, got {self.r}.")
        if self.alpha <= 0:  # the update is scaled by alpha / r: 0 would train adapters with no effect
            raise ValueError(f"alpha: expected positive, got {self.alpha}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected in [0, 1), got {self.dropout}.")


@dataclass
class ClassifierLoraSettings(LoraSettings):
    """LoRA on a ``classifier`` discriminator: the same fields, smaller defaults."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0


def lora_config(settings: LoraSettings | None, task_type: Literal["CAUSAL_LM", "SEQ_CLS"]) -> Any | None:
    """peft's ``LoraConfig`` for ``settings`` (None: no LoRA, full fine-tuning)."""
    if settings is None:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type=task_type,
    )
