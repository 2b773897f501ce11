"""TRL's GRPOTrainer and RLOOTrainer carrying the SFT loss term (InstructGPT's pretraining mix).

Each is the TRL trainer with one more constructor argument, ``real_response_loss``
(:class:`gan_rl.trainer.sft_term.RealResponseLoss`, or None: TRL's trainer), and a prompt order that a
resumed run draws as the uninterrupted one did in every epoch (:mod:`gan_rl.trainer.epoch_sampler`; TRL's
own order otherwise). Everything else, the constructor included, is TRL's; the adversarial reward and
callback go in as TRL's own ``reward_funcs`` and ``callbacks``.
"""

from __future__ import annotations

from typing import Any

from trl import GRPOTrainer, RLOOTrainer

from gan_rl.trainer.sft_term import RealResponseLoss, RealResponseLossMixin
from gan_rl.trainer.trl_internals import EpochSamplerMixin


class AdversarialGRPOTrainer(EpochSamplerMixin, RealResponseLossMixin, GRPOTrainer):
    """``gan-rl ppo`` (and ``grpo``): GRPOTrainer plus ``real_response_loss`` x its coefficient."""

    def __init__(self, *args: Any, real_response_loss: RealResponseLoss | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.real_response_loss = real_response_loss


class AdversarialRLOOTrainer(EpochSamplerMixin, RealResponseLossMixin, RLOOTrainer):
    """``gan-rl reinforce`` (and ``rloo``): RLOOTrainer plus ``real_response_loss`` x its coefficient."""

    def __init__(self, *args: Any, real_response_loss: RealResponseLoss | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.real_response_loss = real_response_loss
