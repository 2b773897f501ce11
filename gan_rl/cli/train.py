"""Building and running an adversarial RL run from a recipe: ``gan-rl ppo`` and ``gan-rl reinforce``.

:func:`run` reads top to bottom as the algorithm: preflight (everything that can be checked before the
generator loads), the generator, the adversary (discriminator, sample buffer, discriminator trainer,
reward and callback), TRL's trainer with the adversary wired in, samples before training, training, and
the summary with samples after it. Each step is a function below :func:`run`; the prelude and epilogue it
shares with ``gan-rl sft`` are in :mod:`gan_rl.cli.runs`, the TRL trainer each algorithm uses in
:mod:`gan_rl.cli.algorithms`.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import torch
from accelerate import PartialState
from datasets import Dataset

from gan_rl.cli.algorithms import get_algorithm
from gan_rl.cli.backends import check_backend, setup_distributed
from gan_rl.cli.data import to_trl_dataset
from gan_rl.cli.models import Checkpoints, check_position_limit, load_generator, preflight_checkpoints
from gan_rl.cli.preemption import PreemptionCallback
from gan_rl.cli.recipe import ModelSettings, Recipe, SFTLossSettings
from gan_rl.cli.runs import open_run, prepare_run, save_trainer, write_summary
from gan_rl.cli.selection import finish_selection, selection_callback
from gan_rl.cli.sft import warm_start
from gan_rl.cli.synthetic import PROPERTIES, Property
from gan_rl.cli.trl_config import build_trainer_config, check_train_rows, with_resolved_dtype
from gan_rl.discriminator.base import Discriminator
from gan_rl.eval.metrics import word_distance
from gan_rl.trainer.adversary import Adversary
from gan_rl.trainer.callback import save_discriminator
from gan_rl.trainer.dataset import real_pairs
from gan_rl.trainer.reward import DiscriminatorReward
from gan_rl.trainer.sft_term import RealResponseLoss
from gan_rl.types import Pair
from gan_rl.utils.backends import describe_backend
from gan_rl.utils.checkpoints import DISCRIMINATOR_DIR
from gan_rl.utils.hardware import Precision
from gan_rl.utils.lora import lora_config

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a finished run reports (also written to ``run_summary.json``)."""

    algorithm: str
    output_dir: str
    steps: int
    seconds: float
    disc_rounds: int
    disc_skipped_rounds: int
    disc_stats: dict[str, float]
    warmup_stats: dict[str, float]
    reward_first: float | None
    reward_last: float | None
    fingerprints: list[str]
    samples: list[dict[str, str]] = field(default_factory=list)
    distance_before: float | None = None
    distance_after: float | None = None
    judge_before: float | None = None
    judge_after: float | None = None
    # When data.train is a synthetic dataset that declares a property (gan_rl.cli.synthetic.Property): its
    # name and description, and the share of samples that have it before and after training, and of the real
    # responses, over ``prompts`` held-out prompts (:class:`PropertyProbe`). None otherwise.
    data_property: dict[str, Any] | None = None
    # On resume: the checkpoint the discriminator came from and the fingerprint of the restored weights.
    restored: dict[str, str] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    status: str = "completed"
    # How the run was distributed: deepspeed-zero2/3, fsdp1/2, ddp or single (gan_rl.utils.backends).
    distributed: str = "single"
    # The generator's dtype (model.dtype as resolved on this machine) and why it was chosen.
    dtype: str | None = None
    dtype_reason: str | None = None
    # Selection by samples (the recipe's ``sample_selection:``): best step and score, the curve, the cost,
    # and ``model``, the selected model as an ordinary checkpoint (gan_rl.cli.selection); None: off.
    sample_selection: dict[str, Any] | None = None


def run(
    algorithm: str,
    recipe: Recipe,
    resume: str | bool | None = None,
    overwrite: bool = False,
    num_samples: int = 16,
    progress: bool = True,
    callbacks: list[Any] | None = None,
    fresh_discriminator: bool = False,
) -> RunSummary:
    """Train a generator adversarially with ``algorithm`` (``ppo``, ``reinforce`` or ``gumbel``).

    ``num_samples``: held-out prompts sampled before and after training for the summary; when the data
    declares a property (:class:`PropertyProbe`), its share is measured on up to ``PROPERTY_PROMPTS`` of
    them and printed (0: no samples, no share).

    ``fresh_discriminator``: resume from a checkpoint without a discriminator, warming up a new one (else
    such a checkpoint is not complete and does not count). A :class:`gan_rl.errors.TrainingError` (a
    non-finite loss, weight or reward) ends the run without a summary; so does
    :class:`gan_rl.cli.preemption.Preempted` (SIGTERM or Ctrl-C while training), after a checkpoint.
    """
    algorithm = get_algorithm(algorithm).name  # grpo -> ppo, rloo -> reinforce
    # 1. Everything that can be checked without loading the generator.
    pre = preflight(algorithm, recipe, resume, overwrite, fresh_discriminator)
    # 2-4. The generator, the adversary, and TRL's trainer with the adversary wired in.
    parts = build_run(algorithm, pre, fresh_discriminator, progress, callbacks or [])
    # 5. Samples before training, training, samples after it and the summary (written last: "finished").
    held_out = real_pairs(parts.eval_ds.select(range(min(num_samples, len(parts.eval_ds)))))
    # The data's declared property (None: it has none, or no samples were asked for), measured on more
    # held-out prompts than the summary shows, so that its share is worth reading (PROPERTY_PROMPTS).
    probe = PropertyProbe.of(pre.recipe, parts.eval_ds) if num_samples > 0 else None
    before = sample_before_training(parts, held_out, probe)
    start = time.time()
    with parts.stop.signals():
        parts.trainer.train(resume_from_checkpoint=pre.resume)
    parts.stop.raise_if_stopped(parts.trainer)  # stopped by a signal: a checkpoint, no model, no summary
    seconds = time.time() - start
    save_trainer(parts.trainer, pre.out)
    selected = None
    if parts.selection is not None:  # under LoRA the selected adapter merged into the starting weights
        selected = finish_selection(
            pre.out, parts.selection.summary(), pre.recipe, parts.reload_generator, parts.tokenizer
        )
    summary = summarize(
        algorithm,
        pre.out,
        parts.trainer,
        parts.adversary,
        parts.tokenizer,
        held_out,
        before,
        seconds,
        pre.precision,
        selected,
        probe,
    )
    if summary.data_property is not None and PartialState().is_main_process:
        click.echo(describe_property(summary.data_property))
    return summary


@dataclass
class RunParts:
    """A run's parts, built and wired (:func:`build_run`), ready to train."""

    tokenizer: Any
    eval_ds: Dataset
    adversary: Adversary
    trainer: Any
    stop: PreemptionCallback
    # Selection by samples on the validation split (None: off).
    selection: Any | None
    # Loads the generator as the run loaded it (the head's frozen reference; selection's starting weights).
    reload_generator: Any


def build_run(
    algorithm: str,
    pre: Preflight,
    fresh_discriminator: bool,
    progress: bool,
    callbacks: list[Any],
) -> RunParts:
    """The generator, the adversary (discriminator, sample buffer, discriminator trainer, reward and
    callback) and TRL's trainer, rewarded by the discriminator, with the SFT term and the adversary wired
    in; a stop signal ends training with a checkpoint (:mod:`gan_rl.cli.preemption`)."""
    recipe, args, out = pre.recipe, pre.args, pre.out
    tokenizer, chat = prepare_run(recipe, out, pre.raw, algorithm)
    train_ds = to_trl_dataset(pre.raw["train"], recipe.data, chat)
    eval_ds = to_trl_dataset(pre.raw["test"], recipe.data, chat) if "test" in pre.raw else train_ds
    real = real_pairs(train_ds)
    # Selection by samples on the validation split (None: off), built before the generator loads.
    selection = selection_callback(recipe, pre.raw, chat, resume_dir=pre.resume)

    def reload_generator() -> Any:
        return load_generator(recipe.model, pre.checkpoints.generator)

    model = reload_generator()
    check_position_limit(model, tokenizer, train_ds, args.max_completion_length, args.chat_template_kwargs)
    adversary = Adversary.build(
        recipe.discriminator,
        model,
        tokenizer,
        real,
        encoder_checkpoint=pre.checkpoints.encoder,
        classifier_checkpoint=pre.checkpoints.classifier,
        device=args.device,
        resume_dir=pre.resume,
        fresh_discriminator=fresh_discriminator,
    )
    stop = PreemptionCallback()
    chat_kwargs = dict(getattr(args, "chat_template_kwargs", None) or {})
    trainer = build_trainer(
        algorithm,
        args,
        model,
        tokenizer,
        train_ds,
        eval_ds,
        recipe.model,
        reward=adversary.reward,
        callbacks=[adversary.callback, stop, *([selection] if selection else []), *callbacks],
        real_response_loss=build_sft_term(recipe.sft_loss, tokenizer, real, args.seed, chat_kwargs),
        progress=progress,
    )
    check_backend(trainer, algorithm)  # DeepSpeed / FSDP asked for and not in use: an error, not a fallback
    # The head's frozen copy of the generator (no LoRA, beta 0) is loaded as the run loaded the generator.
    adversary.attach(trainer, reference=reload_generator)
    if selection is not None:  # samples and saves through the trainer (every process, in step)
        selection.attach(trainer)
    return RunParts(tokenizer, eval_ds, adversary, trainer, stop, selection, reload_generator)


def sample_before_training(parts: RunParts, held_out: list[Pair], probe: PropertyProbe | None) -> list[str]:
    """The held-out samples of the starting policy (and the property probe's), filled in place: now, or
    under FSDP when training starts, since FSDP shards (and may only then load) the weights."""
    before: list[str] = []

    def take_before() -> None:
        before.extend(sample_held_out(parts.adversary, parts.tokenizer, held_out))
        if probe is not None:
            probe.before = sample_aside(parts.adversary, parts.tokenizer, probe.pairs)

    if parts.trainer.is_fsdp_enabled:
        parts.adversary.callback.before_training = take_before
    else:
        take_before()
    return before


# --------------------------------------------------------------------------------------------------
# 1. Preflight
# --------------------------------------------------------------------------------------------------


@dataclass
class Preflight:
    """What :func:`preflight` resolved, for the steps that load and train."""

    # The recipe as the run uses it: with ``model.warm_start: sft``, its generator is the SFT result.
    recipe: Recipe
    args: Any  # TRL's config for the algorithm
    out: Path
    resume: str | None  # the complete checkpoint to resume from (None: a fresh start)
    raw: dict[str, Dataset]  # the data's splits, checked
    checkpoints: Checkpoints
    precision: Precision  # model.dtype as resolved on this machine, and why


def preflight(
    algorithm: str,
    recipe: Recipe,
    resume: str | bool | None,
    overwrite: bool,
    fresh_discriminator: bool,
) -> Preflight:
    """TRL's config, the output directory, the checkpoint to resume, the data and every checkpoint name,
    checked before the generator loads, so that a mistake is one :class:`RecipeError` within seconds.

    With ``model.warm_start: sft`` the SFT run happens here, after the data is read and after its own
    preflight of this run's checkpoints (:func:`gan_rl.cli.sft.warm_start`).
    """
    args = build_trainer_config(recipe, algorithm, remove_unused_columns=False)
    # The distributed state, the trainer's way (use_cpu, backend), before we use it; an FSDP request that
    # accelerate would drop here is an error now, before anything loads (DeepSpeed's: in the config build).
    setup_distributed(args)
    out = Path(args.output_dir)
    resume_path, raw = open_run(recipe, out, resume, overwrite, fresh_discriminator=fresh_discriminator)
    check_train_rows(algorithm, args, len(raw["train"]))  # fewer rows than one batch: no step would run
    recipe = warm_start(recipe)  # model.warm_start: sft -> the generator is the SFT result (run it first)
    # Checkpoint names resolve now (a local path must exist), so a typo stops the run before any loading
    # (and before anything is logged: bad input is one line).
    checkpoints = preflight_checkpoints(recipe, out)
    # model.dtype: auto -> the dtype this machine runs natively (logged once, recorded in the summary).
    # After the warm start, which resolves "auto" by the same rule for its own weights and sft.bf16.
    recipe, precision = with_resolved_dtype(recipe, args.use_cpu)
    return Preflight(recipe, args, out, resume_path, raw, checkpoints, precision)


# --------------------------------------------------------------------------------------------------
# 2. TRL's trainer
# --------------------------------------------------------------------------------------------------


def build_trainer(
    algorithm: str,
    args: Any,
    model: Any,
    tokenizer: Any,
    train_ds: Dataset,
    eval_ds: Dataset,
    settings: ModelSettings,
    *,
    reward: DiscriminatorReward,
    callbacks: list[Any],
    real_response_loss: RealResponseLoss | None,
    progress: bool,
) -> Any:
    """The algorithm's TRL trainer with the discriminator's reward, LoRA from ``model.lora``, and a live
    progress panel on a terminal (plain log lines when output is redirected)."""
    from transformers import PrinterCallback, ProgressCallback
    from trl.trainer.callbacks import RichProgressCallback

    trainer = get_algorithm(algorithm).trainer_class()(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=train_ds,
        # TRL's own evaluation (eval_strategy) generates for the test split and logs eval_reward; the
        # reward does not hand those samples to the discriminator (see DiscriminatorReward.recording).
        eval_dataset=eval_ds if args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=lora_config(settings.lora, "CAUSAL_LM"),
        callbacks=callbacks,
        real_response_loss=real_response_loss,
    )
    if progress and sys.stdout.isatty():
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(RichProgressCallback())
    return trainer


def build_sft_term(
    settings: SFTLossSettings,
    tokenizer: Any,
    real: list[Pair],
    seed: int,
    chat_template_kwargs: dict[str, Any],
) -> RealResponseLoss | None:
    """The SFT loss term on the real pairs (``sft_loss.coef`` > 0), prompts encoded as the trainer
    encodes them; None when it is off."""
    if settings.coef <= 0:
        return None
    return RealResponseLoss(
        tokenizer,
        real,
        settings.coef,
        batch_size=settings.batch_size,
        max_length=settings.max_length,
        seed=seed,
        chat_template_kwargs=chat_template_kwargs,
    )


# --------------------------------------------------------------------------------------------------
# 3. Samples and the summary
# --------------------------------------------------------------------------------------------------


def sample_held_out(adversary: Adversary, tokenizer: Any, pairs: list[Pair]) -> list[str]:
    """The policy's responses to held-out prompts for the summary, sampled as the warm-up samples (with
    TRL's settings) by every process together, each its share, the texts gathered to all (a collective:
    under ZeRO-3 or FSDP no rank could sample the sharded policy alone)."""
    if not pairs:
        return []
    return adversary.callback.generate_across_ranks(tokenizer, pairs)


def summarize(
    algorithm: str,
    out: Path,
    trainer: Any,
    adversary: Adversary,
    tokenizer: Any,
    held_out: list[Pair],
    before: list[str],
    seconds: float,
    precision: Precision | None = None,
    sample_selection: dict[str, Any] | None = None,
    probe: PropertyProbe | None = None,
) -> RunSummary:
    """Samples after training beside those before, the run's numbers, the discriminator and the summary
    files (``run_summary.json`` last). Every process calls it (the fingerprints, the samples and the final
    discriminator's verdict on them are collectives); the main process writes. ``probe``: the data's
    property, with its samples before training (:class:`PropertyProbe`)."""
    fingerprints = adversary.disc_trainer.gather_fingerprints()
    after = sample_held_out(adversary, tokenizer, held_out)
    measured = None
    if probe is not None:  # every process: sampling is a collective
        measured = probe.measure(sample_aside(adversary, tokenizer, probe.pairs))
    disc_trainer = adversary.disc_trainer
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    summary = RunSummary(
        algorithm=algorithm,
        output_dir=str(out),
        steps=trainer.state.global_step,
        seconds=round(seconds, 1),
        disc_rounds=disc_trainer.rounds,
        disc_skipped_rounds=disc_trainer.skipped_rounds,
        disc_stats=disc_trainer.last_stats.as_logs() if disc_trainer.last_stats else {},
        warmup_stats=adversary.callback.warmup_stats,
        reward_first=rewards[0] if rewards else None,
        reward_last=rewards[-1] if rewards else None,
        fingerprints=fingerprints,
        restored=adversary.callback.restored,
        distributed=describe_backend(trainer.accelerator),
        **(precision.as_dict() if precision is not None else {}),
        sample_selection=sample_selection,
        data_property=measured,
    )
    if held_out:  # every process: the verdict runs the frozen encoder (a collective under ZeRO-3 / FSDP)
        compare_samples(summary, adversary.discriminator, held_out, before, after)
    if PartialState().is_main_process:
        save_discriminator(out / DISCRIMINATOR_DIR, disc_trainer, adversary.reward)
    write_summary(out, summary, trainer.state.log_history)
    return summary


def compare_samples(
    summary: RunSummary, judge: Discriminator, pairs: list[Pair], before: list[str], after: list[str]
) -> None:
    """Fill the summary's samples, and two measures of how far they moved toward the real responses:
    the word distance (independent of training) and the final discriminator's mean P(real)."""
    real = [p.response for p in pairs]
    summary.samples = [
        {"prompt": p.prompt_text, "real": p.response, "before": b, "after": a}
        for p, b, a in zip(pairs, before, after, strict=True)
    ]
    summary.distance_before = round(word_distance(before, real), 4)
    summary.distance_after = round(word_distance(after, real), 4)
    feats = [
        judge.featurize([Pair(p.prompt, p.prompt_text, t) for p, t in zip(pairs, texts, strict=True)])
        for texts in (before, after)
    ]
    summary.judge_before, summary.judge_after = (
        round(torch.sigmoid(judge.score(f)).mean().item(), 4) for f in feats
    )


# Held-out prompts sampled before and after training to measure the data's property (fewer when the test
# split is smaller): a share near 0.5 is then known to about +-0.09 (two standard errors).
PROPERTY_PROMPTS = 128


@dataclass
class PropertyProbe:
    """The share of samples with the training data's declared property (``positive`` posts in the
    polarity task), before and after training, beside the real responses' own share.

    No part of training sees the property: the discriminator has to find whatever tells the real
    responses apart, and this measures from outside whether what moved is the property that does. Only
    gan-rl's synthetic datasets declare one (:data:`gan_rl.cli.synthetic.PROPERTIES`).
    """

    prop: Property
    pairs: list[Pair]  # held-out prompts with their real responses
    before: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, recipe: Recipe, eval_ds: Dataset) -> PropertyProbe | None:
        """The probe for ``recipe``'s training data (None: a source that declares no property)."""
        source = recipe.data.train
        prop = PROPERTIES.get(source.synthetic) if source.synthetic is not None else None
        if prop is None:
            return None
        return cls(prop, real_pairs(eval_ds.select(range(min(PROPERTY_PROMPTS, len(eval_ds))))))

    def share(self, texts: list[str]) -> float:
        """The fraction of ``texts`` that have the property."""
        return round(sum(self.prop.holds(t) for t in texts) / len(texts), 4) if texts else 0.0

    def measure(self, after: list[str]) -> dict[str, Any]:
        """What ``run_summary.json`` records as ``data_property``."""
        return {
            "name": self.prop.name,
            "description": self.prop.description,
            "prompts": len(self.pairs),
            "before": self.share(self.before),
            "after": self.share(after),
            "real": self.share([p.response for p in self.pairs]),
        }


def sample_aside(adversary: Adversary, tokenizer: Any, pairs: list[Pair]) -> list[str]:
    """:func:`sample_held_out` with the random state put back afterwards, so that measuring a property
    before training leaves the run itself as it would be without it (the same draws, the same result)."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        return sample_held_out(adversary, tokenizer, pairs)


def describe_property(measured: dict[str, Any]) -> str:
    """The summary's line for the data's property: the share that moved, beside the real data's."""
    return (
        f"{measured['name']} samples (a property of the data that training never sees): "
        f"before {measured['before']:.2f} -> after {measured['after']:.2f}, "
        f"real responses {measured['real']:.2f} ({measured['prompts']} held-out prompts)"
    )
