"""The sample buffer: the generations (and their real partners) the reward saw since the last
discriminator round, a replay of older ones, and a pool of real responses.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from gan_rl.types import Pair


@dataclass
class SampleBuffer:
    """Generated features since the last round (fresh), their real counterparts, and a replay reservoir.

    Beside each feature it keeps the (prompt, response) pair it came from, so that a checkpoint can hold
    the buffer as text (:meth:`state`) and a resumed run rebuilds the features with the frozen encoder
    (:meth:`load_state`) instead of storing hidden states.
    """

    replay_size: int = 0
    seed: int = 0
    # Real pairs are stationary: past ones are as good as fresh ones. Each round draws its real half from
    # a pool of up to this many distinct real pairs seen so far, not only from the few real responses of
    # this step's prompts (a step with 4 prompts would otherwise give 4 real samples against 32 generated).
    real_pool_size: int = 0
    fresh_generated: list[Any] = field(default_factory=list)
    fresh_real: list[Any] = field(default_factory=list)
    replay: list[Any] = field(default_factory=list)
    seen: int = 0  # generated samples ever offered to the reservoir
    # The pairs behind fresh_generated, fresh_real and replay, index for index (None where not given).
    fresh_generated_pairs: list[Pair | None] = field(default_factory=list)
    fresh_real_pairs: list[Pair | None] = field(default_factory=list)
    replay_pairs: list[Pair | None] = field(default_factory=list)
    real_pool: list[Any] = field(default_factory=list)
    real_pool_pairs: list[Pair | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._pool_keys = {p.key for p in self.real_pool_pairs if p is not None}

    def add(
        self,
        generated: list[Any],
        real: list[Any],
        generated_pairs: list[Pair] | None = None,
        real_pairs: list[Pair] | None = None,
    ) -> None:
        self.fresh_generated.extend(generated)
        self.fresh_real.extend(real)
        self.fresh_generated_pairs.extend(generated_pairs or [None] * len(generated))
        self.fresh_real_pairs.extend(real_pairs or [None] * len(real))

    def take_fresh(self) -> tuple[list[Any], list[Any]]:
        """Hand out the fresh samples and move the generated ones into the replay reservoir."""
        generated, real = self.fresh_generated, self.fresh_real
        pairs, real_pairs = self.fresh_generated_pairs, self.fresh_real_pairs
        self.fresh_generated, self.fresh_real = [], []
        self.fresh_generated_pairs, self.fresh_real_pairs = [], []
        for sample, pair in zip(generated, pairs, strict=True):
            # Reservoir sampling: a uniform sample of all past generations.
            self.seen += 1
            if len(self.replay) < self.replay_size:
                self.replay.append(sample)
                self.replay_pairs.append(pair)
            elif self.replay_size > 0:
                j = self.rng.randrange(self.seen)
                if j < self.replay_size:
                    self.replay[j] = sample
                    self.replay_pairs[j] = pair
        for sample, pair in zip(real, real_pairs, strict=True):
            self._add_to_pool(sample, pair)
        return generated, real

    def _add_to_pool(self, sample: Any, pair: Pair | None) -> None:
        """Distinct real pairs, up to ``real_pool_size``; once full, a new one replaces a random one."""
        if self.real_pool_size == 0 or (pair is not None and pair.key in self._pool_keys):
            return
        if len(self.real_pool) < self.real_pool_size:
            self.real_pool.append(sample)
            self.real_pool_pairs.append(pair)
        else:
            j = self.rng.randrange(self.real_pool_size)
            old = self.real_pool_pairs[j]
            if old is not None:
                self._pool_keys.discard(old.key)
            self.real_pool[j], self.real_pool_pairs[j] = sample, pair
        if pair is not None:
            self._pool_keys.add(pair.key)

    def real_for_round(self, fresh_real: list[Any]) -> list[Any]:
        """The real samples a round draws from: the pool when there is one, else this round's own."""
        return self.real_pool if self.real_pool else fresh_real

    # -- checkpointing ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The buffer as JSON-able text: pairs, reservoir counter and random state."""
        pairs = {
            "replay": self.replay_pairs,
            "fresh_generated": self.fresh_generated_pairs,
            "fresh_real": self.fresh_real_pairs,
            "real_pool": self.real_pool_pairs,
        }
        complete = all(p is not None for group in pairs.values() for p in group)
        return {
            "seen": self.seen,
            "rng": _jsonable(self.rng.getstate()),
            "pairs": {k: [asdict(p) for p in v] for k, v in pairs.items()} if complete else None,
        }

    def load_state(self, state: dict[str, Any], featurize: Callable[..., list[Any]]) -> None:
        """Restore :meth:`state`; ``featurize`` (the discriminator's) rebuilds the features from the pairs."""
        self.seen = int(state["seen"])
        self.rng.setstate(_tuples(state["rng"]))
        groups = state.get("pairs")
        if groups is None:  # written without pairs: start with an empty buffer
            # (through the same featurize calls as a full one: under ZeRO-3 / FSDP each is a collective)
            groups = {"replay": [], "fresh_generated": [], "fresh_real": [], "real_pool": []}
        pairs = {k: [Pair(**p) for p in v] for k, v in groups.items()}
        self.real_pool_pairs = pairs.get("real_pool", [])
        self._pool_keys = {p.key for p in self.real_pool_pairs}
        self.real_pool = featurize(self.real_pool_pairs, cache=True)
        self.replay_pairs = pairs["replay"]
        self.fresh_generated_pairs = pairs["fresh_generated"]
        self.fresh_real_pairs = pairs["fresh_real"]
        self.replay = featurize(self.replay_pairs)
        self.fresh_generated = featurize(self.fresh_generated_pairs)
        self.fresh_real = featurize(self.fresh_real_pairs, cache=True)


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
