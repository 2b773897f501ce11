"""The discriminator's losses: binary cross-entropy on single responses, Bradley-Terry on (real,
generated) pairs of the same prompt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_loss(logits: torch.Tensor, is_real: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Binary cross-entropy on logits; one-sided label smoothing (real targets 1 - eps), as for GANs."""
    targets = is_real.float() * (1.0 - label_smoothing)
    return F.binary_cross_entropy_with_logits(logits, targets)


def bradley_terry_loss(real_logits: torch.Tensor, generated_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(real) - D(generated)) over pairs that answer the same prompt (GAD's discriminator
    loss): the discriminator learns to rank a prompt's real response above the generation, so its logit
    is a relative score (no fixed 0 = undecided)."""
    return -F.logsigmoid(real_logits.float() - generated_logits.float()).mean()
