"""Builds the discriminator a config names (``kind``), from its parts."""

from __future__ import annotations

from typing import Any

import torch

from gan_rl.discriminator.adapter import AdapterDiscriminator
from gan_rl.discriminator.base import Discriminator
from gan_rl.discriminator.classifier import ClassifierDiscriminator
from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.discriminator.encoder import FrozenEncoder
from gan_rl.discriminator.head import HeadDiscriminator


def build_discriminator(
    config: DiscriminatorConfig,
    *,
    encoder: FrozenEncoder | None = None,
    checkpoint: str | None = None,
    tokenizer: Any = None,
    hidden_size: int | None = None,
    device: torch.device | str = "cpu",
) -> Discriminator:
    """The discriminator a config describes, on ``device``, seeded by ``config.seed``.

    ``encoder`` for kind ``head``; ``checkpoint`` (resolved: a local path or hub id) for ``classifier``;
    the generator's ``tokenizer`` and ``hidden_size`` for ``adapter`` (bound to the generator later).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.kind == "head":
            if encoder is None:
                raise ValueError("kind 'head' needs a FrozenEncoder.")
            disc: Discriminator = HeadDiscriminator(config, encoder, config.encode_batch_size)
        elif config.kind == "adapter":
            if tokenizer is None or hidden_size is None:
                raise ValueError("kind 'adapter' needs the generator's tokenizer and hidden size.")
            disc = AdapterDiscriminator(config, tokenizer, hidden_size)
        else:
            disc = ClassifierDiscriminator(config, checkpoint or str(config.model))
    return disc.to(device)
