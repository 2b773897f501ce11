"""The discriminator's judgement as a TRL reward function.

``DiscriminatorReward`` goes straight into ``reward_funcs`` of GRPOTrainer/RLOOTrainer. TRL calls it on
every process with that process's completions and every dataset column as keyword arguments; the real
response arrives as the ``real_response`` column. It scores each completion with the current
discriminator and puts the fresh features (generated and real) into the sample buffer for the next
discriminator round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from gan_rl.discriminator.base import Discriminator
from gan_rl.discriminator.buffer import SampleBuffer
from gan_rl.discriminator.config import DiscriminatorRewardConfig
from gan_rl.errors import TrainingError
from gan_rl.types import PROMPT_TEXT, REAL_RESPONSE, Pair
from gan_rl.utils.distributed import all_reduce_


def reward_from_logits(logits: torch.Tensor, form: str) -> torch.Tensor:
    """Map discriminator logits (positive = real) to rewards; see :class:`DiscriminatorRewardConfig`."""
    if form == "logit":
        return logits
    if form == "prob":
        return torch.sigmoid(logits)
    if form == "log_prob":
        return F.logsigmoid(logits)  # log D
    if form == "gail":
        return F.softplus(logits)  # -log(1 - D)
    raise ValueError(f"unknown reward form {form!r}")


class RunningNorm:
    """Exponential moving mean/variance of rewards, updated with all processes' rewards alike."""

    def __init__(self, momentum: float) -> None:
        self.momentum = momentum
        self.mean = 0.0
        self.var = 1.0
        self.count = 0

    def update(self, values: torch.Tensor) -> None:
        stats = all_reduce_(
            torch.tensor([values.sum(), (values**2).sum(), values.numel()], dtype=torch.float64)
        )
        total, total_sq, n = stats.tolist()
        if n == 0:
            return
        mean = total / n
        var = max(total_sq / n - mean**2, 0.0)
        m = self.momentum if self.count else 0.0
        self.mean = m * self.mean + (1 - m) * mean
        self.var = m * self.var + (1 - m) * var
        self.count += int(n)

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        return (values - self.mean) / math.sqrt(self.var + 1e-8)

    def state(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), int(state["count"])


def length_penalty(generated: list[str], real: list[str]) -> torch.Tensor:
    """``|log((1 + words generated) / (1 + words real))|`` row by row: 0 at the real response's length,
    ln 2 at twice or half of it (the ``+1`` keeps an empty text finite)."""
    gen = torch.tensor([len(t.split()) for t in generated], dtype=torch.float32)
    ref = torch.tensor([len(t.split()) for t in real], dtype=torch.float32)
    return torch.log((1 + gen) / (1 + ref)).abs()


def completion_text(completion: Any) -> str:
    """TRL gives plain strings, or for chat data a list of messages whose last is the assistant's."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        return str(completion[-1].get("content", ""))
    return ""


class DiscriminatorReward:
    """Reward = f(D(prompt, completion)); records the fresh samples for the discriminator's next round."""

    __name__ = "discriminator"  # TRL names the reward in its logs after this

    def __init__(
        self,
        discriminator: Discriminator,
        buffer: SampleBuffer,
        config: DiscriminatorRewardConfig,
        end_token_ids: set[int] | None = None,
    ) -> None:
        self.discriminator = discriminator
        self.buffer = buffer
        self.config = config
        self.running = RunningNorm(config.running_momentum)
        self.calls = 0
        # Whether the current call scores training samples: evaluation samples (TRL's eval_strategy) get
        # rewards but never reach the buffer or the running statistics, so test data cannot train the
        # discriminator. run() points it at the policy's train/eval mode, as TRL itself decides.
        self.recording: Callable[[], bool] = lambda: True
        # Token ids that end a completion (TRL's test: the end-of-sequence and padding tokens).
        self.end_token_ids: set[int] = set(end_token_ids or ())

    def shape(self, logits: torch.Tensor) -> torch.Tensor:
        """The reward's form, then its clipping: differentiable in ``logits`` (``gan-rl gumbel``'s loss is
        its negative, before any normalisation)."""
        rewards = reward_from_logits(logits.float(), self.config.form)
        if self.config.clip is not None:
            rewards = rewards.clamp(*self.config.clip)
        return rewards

    def transform(self, logits: torch.Tensor, update_stats: bool = True) -> torch.Tensor:
        """Reward form, then clipping (:meth:`shape`), then normalisation."""
        rewards = self.shape(logits)
        if self.config.normalize == "batch" and rewards.numel() > 1:
            std = rewards.std()
            # All equal (a saturated discriminator): no preference among the completions, so 0 for each.
            rewards = torch.zeros_like(rewards) if std < 1e-6 else (rewards - rewards.mean()) / std
        elif self.config.normalize == "running":
            if update_stats:
                self.running.update(rewards)
            rewards = self.running(rewards)
        return rewards

    def pairs(
        self, prompts: list[Any], completions: list[Any], **columns: Any
    ) -> tuple[list[Pair], list[Pair]]:
        """(generated pairs, real pairs) from TRL's reward arguments."""
        missing = [c for c in (PROMPT_TEXT, REAL_RESPONSE) if c not in columns]
        if missing:
            raise KeyError(
                f"DiscriminatorReward needs the dataset columns {missing}; build the dataset with "
                "gan_rl.adversarial_dataset (and keep remove_unused_columns false)."
            )
        prompt_texts, reals = columns[PROMPT_TEXT], columns[REAL_RESPONSE]
        ids = columns.get("completion_ids")  # TRL's token ids: a completion ended if its last is an end token
        ended = [bool(c) and c[-1] in self.end_token_ids for c in ids] if ids else [True] * len(completions)
        generated = [
            Pair(p, t, completion_text(c), e)
            for p, t, c, e in zip(prompts, prompt_texts, completions, ended, strict=True)
        ]
        unique_real = {(t, r): Pair(p, t, r) for p, t, r in zip(prompts, prompt_texts, reals, strict=True)}
        return generated, list(unique_real.values())

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        training = self.recording()  # first: an adversary not attached to its trainer raises here
        log_metric = kwargs.get("log_metric")
        generated, real = self.pairs(prompts, completions, **kwargs)
        gen_features, real_features = self.discriminator.featurize_round(generated, real)
        logits = self.discriminator.score(gen_features)
        self.check_finite(logits)
        if training:
            self.buffer.add(gen_features, real_features, generated, real)
            self.calls += 1
        rewards = self.transform(logits, update_stats=training)
        if self.config.length_coef > 0:
            penalty = length_penalty([g.response for g in generated], list(kwargs[REAL_RESPONSE]))
            rewards = rewards - self.config.length_coef * penalty
            if log_metric is not None:
                log_metric("rewards/length_penalty", penalty.mean().item())
        if log_metric is not None:
            log_metric("disc/prob_generated_real", torch.sigmoid(logits).mean().item())
        return rewards.tolist()

    def check_finite(self, logits: torch.Tensor) -> None:
        """Stop the run on a non-finite score anywhere (a collective: every process raises together)."""
        bad = all_reduce_(torch.tensor([(~torch.isfinite(logits)).sum().item(), logits.numel()]))
        if bad[0].item() > 0:
            raise TrainingError(
                f"reward call {self.calls + 1}: the discriminator scored {int(bad[0])} of {int(bad[1])} "
                "completions as NaN or infinite; likely cause: non-finite encoder features (a float16 "
                "encoder overflowing) or discriminator weights; earlier checkpoints are untouched."
            )

    def state(self) -> dict[str, Any]:
        return {"running": self.running.state(), "calls": self.calls}

    def load_state(self, state: dict[str, Any]) -> None:
        self.running.load_state(state["running"])
        self.calls = int(state.get("calls", 0))
