"""LoRA settings and the one builder of peft's ``LoraConfig``, for the generator and a classifier.

Both recipe sections (``model.lora``, ``discriminator.lora``) take the same four fields; only their
defaults differ (a judge needs fewer adapter weights than the policy). peft is imported when a config is
built, so a recipe is validated without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class LoraSettings:
    """LoRA adapters on the generator (peft ``LoraConfig``)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


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
