"""Building and running an adversarial RL run from a recipe: ``gan-rl ppo`` and ``gan-rl reinforce``.

Read top to bottom: validate everything that can be validated without a model (recipe, TRL config,
output directory, data), then load the generator, build the discriminator, its reward and callback,
hand them to TRL's trainer, train, and save generator + discriminator + a summary.

Why GRPOTrainer for ``ppo``: TRL removed its critic-based PPOTrainer in 1.13. GRPOTrainer keeps PPO's
clipped surrogate objective (``epsilon``), its several optimisation epochs per batch of samples
(``num_iterations``) and a KL penalty to the reference model (``beta``); the value network is replaced by
a group baseline (the mean reward of ``num_generations`` samples per prompt). ``reinforce`` is
RLOOTrainer: REINFORCE with a leave-one-out baseline, the Monte Carlo policy gradient of RLGAF.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import PartialState

from gan_rl.adversary import DiscriminatorTrainer, SampleBuffer
from gan_rl.algorithms import get_algorithm
from gan_rl.callback import DISCRIMINATOR_DIR, DiscriminatorCallback, save_discriminator
from gan_rl.data import (
    PROMPT_TEXT,
    REAL_RESPONSE,
    data_texts,
    load_raw_splits,
    to_trl_dataset,
    uses_chat_format,
)
from gan_rl.discriminator import (
    FrozenEncoder,
    Pair,
    build_discriminator,
    check_encoder_layer,
    load_checkpoint_encoder,
)
from gan_rl.lora import lora_config
from gan_rl.metrics import word_distance
from gan_rl.models import (
    check_position_limit,
    load_generator,
    preflight_checkpoints,
    prepare_tokenizer,
)
from gan_rl.outputs import (
    RECIPE_FILE,
    SUMMARY_FILE,
    check_output_dir,
    resolve_resume,
)
from gan_rl.plots import plot_training_curves
from gan_rl.recipe import Recipe, RecipeError, build_trainer_config
from gan_rl.reward import DiscriminatorReward
from gan_rl.sft import warm_start
from gan_rl.sft_term import RealResponseLoss

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
    # On resume: the checkpoint the discriminator came from and the fingerprint of the restored weights.
    restored: dict[str, str] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)
    status: str = "completed"


def bind_generator_encoder(encoder: FrozenEncoder, trainer: Any, checkpoint: str, settings: Any) -> str:
    """Point the head's encoder at the generator's frozen reference weights; returns which ones."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        encoder.bind(model, disable_adapters=True)
        return "generator with LoRA adapters disabled"
    if getattr(trainer, "ref_model", None) is not None:
        encoder.bind(trainer.accelerator.unwrap_model(trainer.ref_model))
        return "the trainer's reference model"
    copy = load_generator(settings, checkpoint)
    copy.to(trainer.accelerator.device).requires_grad_(False).eval()
    encoder.bind(copy)
    return "a frozen copy of the initial generator (no LoRA, beta=0: one extra model in memory)"


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
    """Train a generator adversarially with ``algorithm`` (``ppo`` or ``reinforce``).

    ``fresh_discriminator``: resume from a checkpoint without a discriminator, warming up a new one (else
    such a checkpoint is not complete and does not count). A :class:`gan_rl.errors.TrainingError` (a
    non-finite loss, weight or reward) ends the run without a summary.
    """
    from transformers import PrinterCallback, ProgressCallback
    from trl.trainer.callbacks import RichProgressCallback

    # 1. Everything that can be checked without a model.
    args = build_trainer_config(recipe, algorithm, remove_unused_columns=False)
    _ = args.device  # sets up the distributed state the trainer's way (use_cpu, backend) before we use it
    out = Path(args.output_dir)
    check_output_dir(out, bool(resume), overwrite)
    resume_path = resolve_resume(out, resume, fresh_discriminator=fresh_discriminator)
    raw = load_raw_splits(recipe)
    recipe = warm_start(recipe)  # model.warm_start: sft -> the generator is the SFT result (run it first)
    cfg = recipe.discriminator
    # Checkpoint names resolve now (a local path must exist), so a typo stops the run before any loading.
    found = preflight_checkpoints(recipe, out)
    checkpoint, encoder_checkpoint, classifier_checkpoint = found.generator, found.encoder, found.classifier
    state = PartialState()
    tokenizer = prepare_tokenizer(recipe.model, recipe.resolve_path, out, data_texts(raw, recipe.data))
    chat = uses_chat_format(recipe.data, tokenizer)
    train_ds = to_trl_dataset(raw["train"], recipe.data, chat)
    eval_ds = to_trl_dataset(raw["test"], recipe.data, chat) if "test" in raw else train_ds
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / RECIPE_FILE).write_text(
            yaml.safe_dump({"algorithm": algorithm, **recipe.to_dict()}, sort_keys=False)
        )

    # 2. The generator.
    model = load_generator(recipe.model, checkpoint)
    check_position_limit(model, tokenizer, train_ds, args.max_completion_length, args.chat_template_kwargs)

    # 3. The discriminator, its reward and its callback.
    encoder = None
    try:
        if cfg.kind == "head" and encoder_checkpoint is None:
            hidden = model.config.get_text_config().hidden_size
            check_encoder_layer(cfg.encoder_layer, model)
            encoder = FrozenEncoder(tokenizer, hidden, cfg.encoder_layer, generator_format=True)
        elif cfg.kind == "head":
            encoder = load_checkpoint_encoder(cfg, encoder_checkpoint, args.device)
        disc = build_discriminator(cfg, encoder=encoder, checkpoint=classifier_checkpoint, device=args.device)
    except RecipeError:
        raise
    except (OSError, ValueError) as exc:
        field, name = (
            ("encoder", encoder_checkpoint) if cfg.kind == "head" else ("model", classifier_checkpoint)
        )
        raise RecipeError(f"discriminator.{field}: cannot load {name!r}: {exc}") from None
    buffer = SampleBuffer(cfg.replay_size, seed=cfg.seed, real_pool_size=cfg.real_pool_size)
    disc_trainer = DiscriminatorTrainer(disc, cfg)
    reward = DiscriminatorReward(disc, buffer, cfg.reward)
    reward.end_token_ids = {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
    prompts = [Pair(r["prompt"], r[PROMPT_TEXT], r[REAL_RESPONSE]) for r in train_ds]
    callback = DiscriminatorCallback(
        disc_trainer,
        buffer,
        reward,
        warmup_prompts=prompts,
        generation_kwargs={"max_new_tokens": args.max_completion_length},  # until attach() gives TRL's
        resume_dir=resume_path,
        fresh_discriminator=fresh_discriminator,
    )

    # 4. TRL's trainer.
    trainer = get_algorithm(algorithm).trainer_class()(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=train_ds,
        # TRL's own evaluation (eval_strategy) generates for the test split and logs eval_reward; the
        # reward does not hand those samples to the discriminator (see DiscriminatorReward.recording).
        eval_dataset=eval_ds if args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=lora_config(recipe.model.lora, "CAUSAL_LM"),
        callbacks=[callback, *(callbacks or [])],
    )
    if progress and sys.stdout.isatty():  # a live rich panel; plain log lines when output is redirected
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(RichProgressCallback())
    if encoder is not None and cfg.encoder == "generator":
        logger.info(
            "Discriminator encoder: %s", bind_generator_encoder(encoder, trainer, checkpoint, recipe.model)
        )
    callback.attach(trainer)
    reward.recording = lambda: trainer.model.training  # TRL's own test for "train" versus "eval"
    if recipe.sft_loss.coef > 0:
        trainer.real_response_loss = RealResponseLoss(
            tokenizer,
            prompts,
            recipe.sft_loss.coef,
            batch_size=recipe.sft_loss.batch_size,
            max_length=recipe.sft_loss.max_length,
            seed=args.seed,
            chat_template_kwargs=callback.chat_template_kwargs,
        )

    # Samples before training, from held-out prompts, for the summary.
    policy = trainer.accelerator.unwrap_model(trainer.model)
    summary_pairs = [
        Pair(r["prompt"], r[PROMPT_TEXT], r[REAL_RESPONSE])
        for r in eval_ds.select(range(min(num_samples, len(eval_ds))))
    ]
    before = (
        callback.generate(policy, tokenizer, summary_pairs) if state.is_main_process and summary_pairs else []
    )

    # 5. Train, then save generator, discriminator and the summary (the summary last: it marks "finished").
    start = time.time()
    trainer.train(resume_from_checkpoint=resume_path)
    seconds = time.time() - start
    trainer.save_model(str(out))
    trainer.save_state()  # trainer_state.json: the whole log history, readable without tensorboard
    fingerprints = disc_trainer.gather_fingerprints()
    after = (
        callback.generate(policy, tokenizer, summary_pairs) if state.is_main_process and summary_pairs else []
    )

    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    summary = RunSummary(
        algorithm=algorithm,
        output_dir=str(out),
        steps=trainer.state.global_step,
        seconds=round(seconds, 1),
        disc_rounds=disc_trainer.rounds,
        disc_skipped_rounds=disc_trainer.skipped_rounds,
        disc_stats=disc_trainer.last_stats.as_logs() if disc_trainer.last_stats else {},
        warmup_stats=callback.warmup_stats,
        reward_first=rewards[0] if rewards else None,
        reward_last=rewards[-1] if rewards else None,
        fingerprints=fingerprints,
        restored=callback.restored,
    )
    if state.is_main_process:
        if summary_pairs:
            real = [p.response for p in summary_pairs]
            summary.samples = [
                {"prompt": p.prompt_text, "real": p.response, "before": b, "after": a}
                for p, b, a in zip(summary_pairs, before, after, strict=True)
            ]
            summary.distance_before = round(word_distance(before, real), 4)
            summary.distance_after = round(word_distance(after, real), 4)
            judge = disc_trainer.discriminator
            feats = [
                judge.featurize(
                    [Pair(p.prompt, p.prompt_text, t) for p, t in zip(summary_pairs, texts, strict=True)]
                )
                for texts in (before, after)
            ]
            summary.judge_before, summary.judge_after = (
                round(torch.sigmoid(judge.score(f)).mean().item(), 4) for f in feats
            )
        save_discriminator(out / DISCRIMINATOR_DIR, disc_trainer, reward)
        summary.plots = [str(p) for p in plot_training_curves(trainer.state.log_history, out)]
        (out / SUMMARY_FILE).write_text(json.dumps(summary.__dict__, indent=2))
    state.wait_for_everyone()
    return summary
