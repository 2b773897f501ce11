"""The adversarial core: the discriminator's update rounds on the sample buffer (:mod:`.buffer`).

Kept apart from the reward (which only scores) and from the TRL callback (which only decides *when*),
in the manner of imitation's AdversarialTrainer. Under ``accelerate launch`` every process keeps its own
buffer of its own generations; gradients are averaged across processes before each optimizer step, and
the initial weights are broadcast from rank 0, so every rank holds the same discriminator after every
update (checked with a fingerprint after each round).
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist

from gan_rl.discriminator.base import Discriminator
from gan_rl.discriminator.buffer import SampleBuffer
from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.discriminator.losses import bce_loss, bradley_terry_loss
from gan_rl.errors import TrainingError, first_non_finite
from gan_rl.types import Pair
from gan_rl.utils.distributed import all_reduce_, rank, world_size

# Prompts whose real features are kept as partners for loss bradley_terry.
PARTNER_CAPACITY = 65536


@dataclass
class RoundStats:
    """What one discriminator round saw (averaged over its updates and over all processes)."""

    loss: float
    acc_real: float
    acc_generated: float
    updates: int
    # True when the guard skipped the round (the discriminator was already above ``max_accuracy``).
    skipped: bool = False

    @property
    def accuracy(self) -> float:
        return 0.5 * (self.acc_real + self.acc_generated)

    def as_logs(self, prefix: str = "disc/") -> dict[str, float]:
        return {
            f"{prefix}loss": self.loss,
            f"{prefix}acc_real": self.acc_real,
            f"{prefix}acc_generated": self.acc_generated,
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}skipped": float(self.skipped),
        }


class DiscriminatorTrainer:
    """Trains a discriminator on real versus generated features; identical on every process."""

    def __init__(self, discriminator: Discriminator, config: DiscriminatorConfig) -> None:
        self.discriminator = discriminator
        self.config = config
        self.optimizer = self._new_optimizer()
        self.rng = random.Random()
        self.rounds = 0
        self.skipped_rounds = 0
        self.last_stats: RoundStats | None = None
        # loss bradley_terry: the latest real response for each prompt (a generation's partner), as (its
        # features, its pair); per process, like the buffer, and checkpointed with it (partners_state).
        self._real_by_prompt: OrderedDict[str, tuple[Any, Pair]] = OrderedDict()
        self._broadcast_weights()

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.discriminator.trainable_parameters(),
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
        )

    def _broadcast_weights(self) -> None:
        """Every process starts from rank 0's weights."""
        if world_size() > 1:
            for tensor in self.discriminator.state_dict().values():
                dist.broadcast(tensor, src=0)

    def rebuild(self) -> None:
        """A new optimizer over the discriminator's weights as they are now, and rank 0's weights on every
        process: for kind ``adapter``, whose adapter joins the generator after the trainer exists."""
        self.optimizer = self._new_optimizer()
        self._broadcast_weights()

    def _draw(self, pool: list[Any], n: int) -> list[Any]:
        if len(pool) >= n:
            return self.rng.sample(pool, n)
        return [self.rng.choice(pool) for _ in range(n)]

    def _generated_batch(self, fresh: list[Any], replay: list[Any], n: int) -> list[Any]:
        n_replay = int(round(n * self.config.replay_fraction)) if replay else 0
        return self._draw(fresh, n - n_replay) + (self._draw(replay, n_replay) if n_replay else [])

    @property
    def paired(self) -> bool:
        """Whether the loss compares each generation with a real response to the same prompt."""
        return self.config.loss == "bradley_terry"

    def _remember_real(self, features: list[Any], pairs: list[Pair | None]) -> None:
        for feature, pair in zip(features, pairs, strict=True):
            if pair is not None:
                self._real_by_prompt[pair.prompt_text] = (feature, pair)
                self._real_by_prompt.move_to_end(pair.prompt_text)
        while len(self._real_by_prompt) > PARTNER_CAPACITY:
            self._real_by_prompt.popitem(last=False)

    def _with_partners(self, generated: list[Any], pairs: list[Pair | None]) -> list[tuple[Any, Any]]:
        """(generated, real) feature pairs for the same prompt; generations without a known real partner
        (pairs not recorded, prompt not seen) are left out."""
        known = self._real_by_prompt
        return [
            (feature, known[pair.prompt_text][0])
            for feature, pair in zip(generated, pairs, strict=True)
            if pair is not None and pair.prompt_text in known
        ]

    def _sync_gradients(self, params: list[torch.nn.Parameter]) -> None:
        if world_size() == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        all_reduce_(flat).div_(world_size())
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    @torch.no_grad()
    def evaluate(self, real: list[Any], generated: list[Any]) -> RoundStats:
        """Loss and accuracies on the given samples without training (eval mode, no dropout), averaged
        over every process's samples; a collective."""
        disc = self.discriminator
        batch_size = self.config.batch_size  # a classifier's forward is an LLM's: no bigger than training
        was_training = disc.training
        disc.eval()
        totals = torch.zeros(5, dtype=torch.float64)  # loss sum, correct real, n real, correct gen, n gen
        try:
            with disc.engaged():
                self._evaluate_into(totals, real, generated, batch_size)
        finally:
            disc.train(was_training)
        totals = all_reduce_(totals)
        n = max(totals[2].item() + totals[4].item(), 1.0)
        return RoundStats(
            loss=totals[0].item() / n,
            acc_real=totals[1].item() / max(totals[2].item(), 1.0),
            acc_generated=totals[3].item() / max(totals[4].item(), 1.0),
            updates=0,
        )

    def _evaluate_into(
        self, totals: torch.Tensor, real: list[Any], generated: list[Any], batch_size: int
    ) -> None:
        """This process's sums for :meth:`evaluate`: loss, correct and seen real, correct and seen generated."""
        disc = self.discriminator
        if self.paired:  # real[i] and generated[i] answer the same prompt: is the real one ranked higher?
            for start in range(0, len(real), batch_size):
                r = disc(disc.collate(real[start : start + batch_size])).float()
                g = disc(disc.collate(generated[start : start + batch_size])).float()
                totals[0] += bradley_terry_loss(r, g).item() * 2 * len(r)
                totals[1] += (r > g).sum().item()
                totals[3] += (r > g).sum().item()
                totals[2] += len(r)
                totals[4] += len(r)
        for samples, label in ((real, 1.0), (generated, 0.0)) if not self.paired else ():
            for start in range(0, len(samples), batch_size):
                chunk = samples[start : start + batch_size]
                logits = disc(disc.collate(chunk)).float()
                target = torch.full_like(logits, label)
                totals[0] += bce_loss(logits, target, self.config.label_smoothing).item() * len(chunk)
                correct = (logits > 0) if label == 1.0 else (logits <= 0)
                index = 1 if label == 1.0 else 3
                totals[index] += correct.sum().item()
                totals[index + 1] += len(chunk)

    def update(self, real: list[Any], generated: list[Any]) -> tuple[float, float, float]:
        """One optimizer step on a balanced batch; returns (loss, acc_real, acc_generated) before the step."""
        disc = self.discriminator
        disc.train()
        self.optimizer.zero_grad(set_to_none=True)
        with disc.engaged():  # from the forward through the backward (kind adapter: its adapter active)
            logits = disc(disc.collate(real + generated))
            if self.paired:  # real[i] and generated[i] answer the same prompt
                loss = bradley_terry_loss(logits[: len(real)], logits[len(real) :])
            else:
                is_real = torch.cat([torch.ones(len(real)), torch.zeros(len(generated))]).to(logits.device)
                loss = bce_loss(logits, is_real, self.config.label_smoothing)
            loss.backward()
        params = disc.trainable_parameters()
        self._sync_gradients(params)
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        self.optimizer.step()
        with torch.no_grad():
            if self.paired:  # ranking accuracy: the real response above the generation
                acc_real = acc_gen = (logits[: len(real)] > logits[len(real) :]).float().mean().item()
            else:
                acc_real = (logits[: len(real)] > 0).float().mean().item()
                acc_gen = (logits[len(real) :] <= 0).float().mean().item()
        return loss.item(), acc_real, acc_gen

    def train_round(self, buffer: SampleBuffer, updates: int) -> RoundStats | None:
        """Train on the buffer's fresh samples (plus replay) for ``updates`` steps.

        Collective: every process must call it at the same step. Returns None when some process has no
        fresh samples (then nobody trains, so the processes stay in step). With ``max_accuracy`` < 1 the
        round first measures the discriminator on the fresh samples and skips its updates (stats with
        ``skipped``) when it already tells them apart better than that: a discriminator that always wins
        gives the policy a saturated reward with no signal in it.
        """
        have = all_reduce_(torch.tensor([len(buffer.fresh_generated), len(buffer.fresh_real)]), "min")
        if have.min().item() == 0 or updates == 0:
            return None
        replay = list(buffer.replay)  # past generations only: not this round's fresh ones
        replay_pairs = list(buffer.replay_pairs)
        generated_pairs, real_pairs = list(buffer.fresh_generated_pairs), list(buffer.fresh_real_pairs)
        generated, real = buffer.take_fresh()
        if self.paired:
            # Each generation with a real response to its own prompt: the pool's first, then this step's
            # (the latest real response per prompt wins; the map is checkpointed, partners_state).
            self._remember_real(buffer.real_pool, buffer.real_pool_pairs)
            self._remember_real(real, real_pairs)
            fresh, past = (
                self._with_partners(generated, generated_pairs),
                self._with_partners(replay, replay_pairs),
            )
            if all_reduce_(torch.tensor([len(fresh)]), "min").item() == 0:
                return None
            generated, real = [g for g, _ in fresh], [r for _, r in fresh]
        if self.config.max_accuracy < 1.0:
            # The guard: is the discriminator already winning on this step's samples (generated ones it has
            # not trained on; real ones it may have met before, the real pool being reused)?
            before = self.evaluate(real, generated)
            if before.accuracy > self.config.max_accuracy:
                self.skipped_rounds += 1
                self.last_stats = RoundStats(
                    before.loss, before.acc_real, before.acc_generated, updates=0, skipped=True
                )
                self.check_finite(self.last_stats)
                return self.last_stats
        # Each process draws its own batches; seeding by round makes a resumed run draw the same ones.
        self.rng.seed(f"{self.config.seed}/{rank()}/{self.rounds}")
        n = self.config.batch_size // 2 or 1
        totals = torch.zeros(3, dtype=torch.float64)
        if not self.paired:
            real = buffer.real_for_round(real)
        for _ in range(updates):
            if self.paired:
                batch = self._generated_batch(fresh, past, n)
                stats = self.update([r for _, r in batch], [g for g, _ in batch])
            else:
                stats = self.update(self._draw(real, n), self._generated_batch(generated, replay, n))
            totals += torch.tensor(stats, dtype=torch.float64)
        totals = all_reduce_(totals / updates) / world_size()
        self.rounds += 1
        self.last_stats = RoundStats(*totals.tolist(), updates=updates)
        self.check_finite(self.last_stats)
        return self.last_stats

    def check_finite(self, stats: RoundStats) -> None:
        """Stop the run when the round's loss (averaged over every process) or a weight is not finite.

        A NaN discriminator gives NaN rewards: the policy would stop learning while the run went on to
        report itself completed. Every process reaches the same verdict: the loss is all-reduced and the
        weights are equal on every rank after a round.
        """
        bad = first_non_finite([("loss", stats.loss)])
        if bad is None:
            with torch.no_grad():
                for name, param in self.discriminator.named_parameters():
                    if param.requires_grad and not bool(torch.isfinite(param).all()):
                        bad = (f"weight {name}", float("nan"))
                        break
        if bad is not None:
            raise TrainingError(
                f"discriminator round {self.rounds}: {bad[0]} is {bad[1]} (not finite); likely cause: "
                f"discriminator.learning_rate {self.config.learning_rate:g} too high, or an encoder whose "
                "features overflow (float16); earlier checkpoints are untouched."
            )

    def in_sync(self) -> bool:
        """Whether every process holds the same trainable weights (a collective).

        A cheap per-round check: float64 sums of the weights and of their squares, computed on the
        discriminator's device, must agree exactly (min == max over processes). The full hash
        (:meth:`fingerprint`) is taken once, at the end of a run.
        """
        params = self.discriminator.trainable_parameters()
        with torch.no_grad():
            local = torch.stack(
                [
                    sum(p.detach().double().sum() for p in params),
                    sum(p.detach().double().square().sum() for p in params),
                ]
            ).cpu()
        low, high = all_reduce_(local.clone(), "min"), all_reduce_(local.clone(), "max")
        return bool(torch.equal(low, high))

    def fingerprint(self) -> str:
        """A short hash of the discriminator's trainable weights (equal on every rank after each round)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.discriminator.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def gather_fingerprints(self) -> list[str]:
        """Every rank's fingerprint (a collective); rank 0's first."""
        mine = self.fingerprint()
        if world_size() == 1:
            return [mine]
        out: list[Any] = [None] * world_size()
        dist.all_gather_object(out, mine)
        return out

    # -- checkpointing ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs besides the weights and optimizer tensors."""
        return {"rounds": self.rounds, "skipped_rounds": self.skipped_rounds}

    def load_state(self, state: dict[str, Any]) -> None:
        self.rounds = int(state.get("rounds", 0))
        self.skipped_rounds = int(state.get("skipped_rounds", 0))

    def partners_state(self) -> list[dict[str, Any]]:
        """This process's Bradley-Terry partners as JSON-able pairs, oldest first: without them a resumed
        run would drop the replayed generations whose prompt's real response it has not met again (the
        uninterrupted run keeps them), and would no longer be the same run."""
        return [asdict(pair) for _, pair in self._real_by_prompt.values()]

    def load_partners(self, pairs: list[dict[str, Any]], featurize: Callable[..., list[Any]]) -> None:
        """Restore :meth:`partners_state`; ``featurize`` (the discriminator's) rebuilds the features. Called
        on every process, with an empty list too (under ZeRO-3 / FSDP featurizing is a collective)."""
        restored = [Pair(**p) for p in pairs]
        features = featurize(restored, cache=True)
        self._real_by_prompt = OrderedDict(
            (pair.prompt_text, (feature, pair)) for feature, pair in zip(features, restored, strict=True)
        )
