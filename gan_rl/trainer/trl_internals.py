"""The one place at the trainer level that reaches into TRL's or transformers' private trainer state, and
what gan-rl must know of TRL's sampling cycle.

Each name here is checked against TRL 1.16 and transformers 5.x; when they move one, this module (and the
tests that exercise it) is what changes. ``tests/test_internals.py`` fails on a private access anywhere else
in the package; below the trainer level, :mod:`gan_rl.utils.library_internals` is the sibling.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any


def metric_logger(trainer: Any, mode: str = "train") -> Callable[[str, float], None] | None:
    """A function that adds ``value`` under ``name`` to the trainer's metrics of the current logging step,
    or None for a trainer without TRL's metrics.

    TRL's trainers average ``_metrics[mode][name]`` at every log and send it to every ``report_to``
    backend; it is private, and this is the one place that touches it (tests/cli/test_algorithms.py fails
    when TRL changes it). The public ``log_metric`` TRL hands to reward functions is flushed at the next
    generation only, too late for the discriminator's rounds and the SFT term, which run after it.
    """
    metrics = getattr(trainer, "_metrics", None)
    if metrics is None:
        return None

    def log(name: str, value: float) -> None:
        metrics[mode][name].append(value)

    return log


class TRLMetricsMixin:
    """TRL's metric store for a transformers ``Trainer`` that is not TRL's (``gan-rl gumbel``): the same
    ``_metrics`` that :func:`metric_logger` writes into, averaged into the logs and cleared at every log as
    TRL 1.16's trainers do, so the discriminator's callback and the SFT term log the same way everywhere."""

    def init_trl_metrics(self) -> None:
        self._metrics: dict[str, defaultdict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the averages of the metrics since the last log (as TRL's trainers do), then log."""
        mode = "train" if self.model.training else "eval"
        metrics = {k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v}
        if mode == "eval":
            metrics = {f"eval_{k}": v for k, v in metrics.items()}
        self._metrics[mode].clear()
        super().log({**logs, **metrics}, start_time)


def scales_loss_for_accumulation(trainer: Any) -> bool:
    """Whether the trainer divides its loss by the gradient-accumulation steps itself (TRL 1.16's
    GRPOTrainer: ``loss_is_scaled_for_ga``), rather than transformers dividing the returned loss after."""
    return bool(getattr(trainer, "loss_is_scaled_for_ga", False))


def set_prompts_per_batch(trainer: Any, prompts: int) -> None:
    """The data loader's batch size of a transformers ``Trainer``: transformers 5.x reads the private
    ``_train_batch_size`` when it builds the train loader (``per_device_train_batch_size`` otherwise)."""
    trainer._train_batch_size = prompts


class EpochSamplerMixin:
    """The trainer's training sampler wrapped in :class:`~gan_rl.trainer.epoch_sampler.EpochSampler`: the
    same order, restored on resume. transformers' hook is the private ``_get_train_sampler`` (TRL 1.16's
    GRPO/RLOO trainers override it with their ``RepeatSampler``)."""

    def _get_train_sampler(self, dataset: Any = None) -> Any:
        from gan_rl.trainer.epoch_sampler import EpochSampler

        return EpochSampler(super()._get_train_sampler(dataset))


class ReferenceLogpsHookMixin:
    """A hook around TRL 1.16 ``DPOTrainer``'s private ``_precompute_ref_logps`` (its reference model's
    log-probabilities of every pair, computed in ``__init__``): a subclass defines
    ``precomputed_reference(dataset, name, compute)``, where ``compute()`` runs TRL's own computation."""

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        return self.precomputed_reference(
            dataset,
            name,
            lambda: super(ReferenceLogpsHookMixin, self)._precompute_ref_logps(dataset, name, batch_size),
        )


def dict_fields(config_class: type, *extra: str) -> list[str]:
    """The fields that transformers' ``TrainingArguments`` parses from a JSON string into a dict (its private
    ``_VALID_DICT_FIELDS``, which TRL's configs extend), with ``extra`` added."""
    return [*config_class._VALID_DICT_FIELDS, *extra]


def generation_cycle(args: Any) -> int:
    """TRL's GRPO/RLOO trainers generate once per ``steps_per_generation x num_iterations`` micro-steps and
    reuse the samples in between (in memory only): the length of that cycle in optimizer steps (1 for
    trainers without those settings, such as SFT)."""
    accumulation = max(int(getattr(args, "gradient_accumulation_steps", 1) or 1), 1)
    per_generation = int(getattr(args, "steps_per_generation", None) or accumulation)
    every = per_generation * max(int(getattr(args, "num_iterations", 1) or 1), 1)
    return every // math.gcd(every, accumulation)


def at_generation_boundary(args: Any, global_step: int) -> bool:
    """Whether TRL's GRPO/RLOO trainers sample afresh right after optimizer step ``global_step``."""
    return global_step % generation_cycle(args) == 0


def save_steps_problem(args: Any) -> str | None:
    """Why ``args.save_steps`` would write checkpoints inside TRL's generation cycle, or None.

    GRPO/RLOO keep the samples of a cycle in memory only, so a run resumed from a checkpoint inside one
    samples afresh: another run than the uninterrupted one. A fractional ``save_steps`` (a share of the
    run) and other save strategies are not judged. The text follows the number of steps in a message.
    """
    strategy = getattr(args, "save_strategy", "no")
    save_steps = getattr(args, "save_steps", None)
    if getattr(strategy, "value", strategy) != "steps" or not isinstance(save_steps, (int, float)):
        return None
    cycle = generation_cycle(args)
    if save_steps < 1 or int(save_steps) % cycle == 0:
        return None
    return (
        f"puts checkpoints inside TRL's generation cycle (steps_per_generation "
        f"{getattr(args, 'steps_per_generation', None)} x num_iterations {getattr(args, 'num_iterations', 1)} "
        f"micro-steps, gradient_accumulation_steps {getattr(args, 'gradient_accumulation_steps', 1)}): a run "
        f"resumed there would sample afresh, not continue; use a multiple of {cycle}"
    )
