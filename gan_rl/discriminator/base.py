"""The discriminator: tells real (prompt, response) pairs from the generator's own.

Every discriminator splits into a frozen part and a trainable part:

* ``featurize(pairs)`` runs the frozen part once per pair, without gradients, and returns one feature
  per pair (hidden states for ``head``, token ids for ``classifier``). Features of real pairs are cached.
* ``forward(batch)`` runs the trainable part on collated features and returns one logit per pair
  (positive: "real").

The reward scores fresh generations from their features and hands the same features to the sample
buffer, so a discriminator update never runs the frozen encoder again."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.types import Pair


class Discriminator(nn.Module):
    """Common interface; subclasses define ``_featurize``, ``collate`` and ``forward``."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        self._real_cache: OrderedDict[tuple[str, str], Any] = OrderedDict()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def collective_featurize(self) -> bool:
        """Whether :meth:`_featurize` is a collective (an encoder with sharded weights): then every rank
        calls it at the same points, even with nothing to encode, and it keeps the ranks in step."""
        return False

    def engaged(self) -> contextlib.AbstractContextManager:
        """A context for forwards and their backward: what must hold from the forward to the gradient
        (kind ``adapter``: its adapter active on the generator's base). Nothing for the other kinds."""
        return contextlib.nullcontext()

    def featurize(self, pairs: list[Pair], cache: bool = False) -> list[Any]:
        """Frozen features, one per pair (on CPU). ``cache=True`` for real pairs: they never change."""
        if not cache or self.config.cache_size == 0:
            return self._featurize(pairs) if pairs or self.collective_featurize else []
        missing = list({p.key: p for p in pairs if p.key not in self._real_cache}.values())
        computed = self._featurize(missing) if missing or self.collective_featurize else []
        for pair, feature in zip(missing, computed, strict=True):
            self._real_cache[pair.key] = feature
        out = []
        for pair in pairs:
            self._real_cache.move_to_end(pair.key)
            out.append(self._real_cache[pair.key])
        while len(self._real_cache) > self.config.cache_size:
            self._real_cache.popitem(last=False)
        return out

    def featurize_round(self, generated: list[Pair], real: list[Pair]) -> tuple[list[Any], list[Any]]:
        """Features of fresh generations and of their real counterparts, in one pass of the frozen part."""
        if self.config.cache_size == 0:
            features = self.featurize(generated + real)
            return features[: len(generated)], features[len(generated) :]
        missing = list({p.key: p for p in real if p.key not in self._real_cache}.values())
        features = self.featurize(generated + missing)
        for pair, feature in zip(missing, features[len(generated) :], strict=True):
            self._real_cache[pair.key] = feature
        return features[: len(generated)], self.featurize(real, cache=True)

    def _featurize(self, pairs: list[Pair]) -> list[Any]:
        raise NotImplementedError

    def collate(self, features: list[Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def score(self, features: list[Any], batch_size: int = 64) -> torch.Tensor:
        """Logits (float32, CPU) for features, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            with self.engaged():
                chunks = [
                    self(self.collate(features[i : i + batch_size])).float().cpu()
                    for i in range(0, len(features), batch_size)
                ]
        finally:
            self.train(was_training)
        return torch.cat(chunks) if chunks else torch.zeros(0)
