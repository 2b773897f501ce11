"""SPIN's rejected sample picked by an explicit discriminator (``spin.rejected_by: discriminator``).

SPIN's discriminator is implicit: the policy's log-ratio against its previous iterate, trained by DPO to
rank the real response above the own sample. With ``samples_per_prompt: k > 1`` an iteration has k own
samples per prompt to choose the rejected side from. This module lets the adversarial stage's explicit
discriminator (the recipe's ``discriminator:``) choose: trained on this iteration's samples against the
real responses, it scores every sample, and each prompt keeps as its rejected side the sample it finds
*least* real, the generator's most recognisable tell, which DPO then pushes down. The explicit
discriminator ranks; the implicit one trains.

A discriminator that scores the very samples it was trained on has fit them: its lowest scores there say
as much about what it memorised as about what is generated. So the scoring is cross-fitted: the rows are
split in two folds (even and odd positions), a fresh discriminator trains on one fold's samples and real
responses and scores the other's, then the other way round. Every score is held out.

The discriminator's frozen part (kind ``head``: the generator's hidden states, or its own encoder; kind
``classifier``: token ids) is computed once for both folds; only the trainable part starts afresh (seeded
from the run's seed, the iteration and the fold). Kind ``adapter`` trains a LoRA adapter on the policy
TRL wraps, which does not exist before the iteration's DPO run: refused.

Under ``accelerate launch`` every process runs the whole ranking on the same pairs (the discriminator's
updates are collectives that average identical gradients), so every process keeps the same samples; the
main process writes them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.discriminator.trainer import DiscriminatorTrainer
from gan_rl.trainer.spin.pairs import PreferencePair
from gan_rl.types import Pair

FOLDS = 2


@dataclass
class RejectionStats:
    """How the explicit discriminator ranked an iteration's samples (``iteration.json``'s ``rejection``)."""

    # Held-out ranking accuracy: how often the real response of a row scored above one of its samples.
    heldout_accuracy: float
    # Mean logit (positive: "real") of every sample, and of the samples kept as rejected.
    mean_score: float
    mean_kept_score: float
    # Mean length (words) of every sample and of the kept ones: a ranking that only picks by length shows.
    mean_words: float
    mean_kept_words: float
    updates_per_fold: int


def least_real(scores: Sequence[float], samples_per_prompt: int) -> list[int]:
    """For each prompt's group of ``samples_per_prompt`` consecutive scores, the index within the group of
    the lowest one (the first of equal lowest)."""
    if samples_per_prompt < 1 or len(scores) % samples_per_prompt:
        raise ValueError(f"least_real: {len(scores)} scores are not groups of {samples_per_prompt}.")
    groups = [scores[i : i + samples_per_prompt] for i in range(0, len(scores), samples_per_prompt)]
    return [min(range(len(g)), key=lambda j, g=g: (g[j], j)) for g in groups]


def check_rejection_discriminator(config: DiscriminatorConfig) -> None:
    """A ValueError unless ``config`` can rank SPIN's samples (kinds ``head`` and ``classifier``)."""
    if config.kind == "adapter":
        raise ValueError(
            "discriminator.kind: 'adapter' trains an adapter on the policy TRL wraps for training, which "
            "SPIN's sampling precedes; spin.rejected_by: discriminator takes kind 'head' or 'classifier'."
        )


def pick_rejected(
    candidates: list[PreferencePair],
    samples_per_prompt: int,
    config: DiscriminatorConfig,
    model: torch.nn.Module,
    tokenizer: Any,
    seed: int,
    *,
    encoder_checkpoint: str | None = None,
    classifier_checkpoint: str | None = None,
) -> tuple[list[PreferencePair], RejectionStats]:
    """One pair per row out of ``candidates`` (prompt-major, ``samples_per_prompt`` per row, as
    :func:`gan_rl.trainer.spin.pairs.build_pairs` makes them): the sample the cross-fitted discriminator
    scores least real, with that score in ``score``. ``model``: the policy that sampled them (the encoder
    of kind ``head`` with ``encoder: generator``). A collective under ``accelerate launch``."""
    from gan_rl.trainer.adversary import discriminator_for

    check_rejection_discriminator(config)
    k = samples_per_prompt
    if k < 2 or not candidates or len(candidates) % k:
        raise ValueError(
            f"pick_rejected: {len(candidates)} candidates are not groups of samples_per_prompt >= 2 (got {k})."
        )
    rows = [candidates[i : i + k] for i in range(0, len(candidates), k)]
    if len(rows) < 2 * FOLDS:
        raise ValueError(
            f"pick_rejected: {len(rows)} rows; cross-fitting needs at least {2 * FOLDS} (each fold trains "
            "on the other's rows)."
        )
    real = [_pair(group[0], group[0].chosen, True) for group in rows]
    generated = [_pair(c, c.rejected, c.ended) for c in candidates]
    device = next(model.parameters()).device

    def fresh(fold: int) -> DiscriminatorTrainer:
        torch.manual_seed(_fold_seed(seed, fold))
        disc, encoder = discriminator_for(
            config, model, tokenizer, encoder_checkpoint, classifier_checkpoint, device
        )
        if encoder is not None and encoder.model is None:
            encoder.bind(model)  # the policy that sampled (with its adapter, under LoRA)
        return DiscriminatorTrainer(disc, config)

    trainer = fresh(0)
    real_features = trainer.discriminator.featurize(real)
    generated_features = trainer.discriminator.featurize(generated)
    scores = [0.0] * len(candidates)
    real_scores = [0.0] * len(rows)
    for fold in range(FOLDS):
        if fold > 0:
            trainer = fresh(fold)
        train_rows = [r for r in range(len(rows)) if r % FOLDS != fold]
        held_out = [r for r in range(len(rows)) if r % FOLDS == fold]
        _train(trainer, real_features, generated_features, train_rows, k, _fold_seed(seed, fold))
        held_candidates = [r * k + j for r in held_out for j in range(k)]
        fold_scores = trainer.discriminator.score([generated_features[i] for i in held_candidates])
        for i, value in zip(held_candidates, fold_scores.tolist(), strict=True):
            scores[i] = value
        fold_real = trainer.discriminator.score([real_features[r] for r in held_out])
        for r, value in zip(held_out, fold_real.tolist(), strict=True):
            real_scores[r] = value
    kept_index = least_real(scores, k)
    kept = [
        replace(group[j], score=round(scores[r * k + j], 6))
        for r, (group, j) in enumerate(zip(rows, kept_index, strict=True))
    ]
    words = [len(str(_text(c.rejected)).split()) for c in candidates]
    kept_words = [words[r * k + j] for r, j in enumerate(kept_index)]
    wins = sum(real_scores[i // k] > scores[i] for i in range(len(candidates)))
    stats = RejectionStats(
        heldout_accuracy=wins / len(candidates),
        mean_score=sum(scores) / len(scores),
        mean_kept_score=sum(scores[r * k + j] for r, j in enumerate(kept_index)) / len(rows),
        mean_words=sum(words) / len(words),
        mean_kept_words=sum(kept_words) / len(kept_words),
        updates_per_fold=config.warmup_updates,
    )
    return kept, stats


def _train(
    trainer: DiscriminatorTrainer,
    real_features: list[Any],
    generated_features: list[Any],
    train_rows: list[int],
    k: int,
    seed: int,
) -> None:
    """``config.warmup_updates`` steps (a fresh discriminator's training on one policy's samples, as the
    adversarial stage's warm-up) on batches of (real response, one of its row's samples), drawn with
    ``seed``: paired, so that the Bradley-Terry loss and the classification loss see the same batches."""
    config = trainer.config
    rng = random.Random(seed)
    n = max(config.batch_size // 2, 1)
    for _ in range(config.warmup_updates):
        draws = [(r, rng.randrange(k)) for r in (rng.choice(train_rows) for _ in range(n))]
        trainer.update(
            [real_features[r] for r, _ in draws], [generated_features[r * k + j] for r, j in draws]
        )
    stats = trainer.evaluate(
        [real_features[r] for r in train_rows], [generated_features[r * k] for r in train_rows]
    )
    trainer.check_finite(stats)


def _fold_seed(seed: int, fold: int) -> int:
    return (seed * 1_000_003 + 7_919 * (fold + 1)) % 2**32


def _text(side: Any) -> str:
    """A pair's side as text: plain text, or the content of one assistant message."""
    return side[-1]["content"] if isinstance(side, list) else str(side)


def _pair(candidate: PreferencePair, response: Any, ended: bool) -> Pair:
    """The discriminator's (prompt, response): the prompt as the generator saw it, its text as written
    (the last user message of a chat prompt)."""
    prompt = candidate.prompt
    if isinstance(prompt, list):
        users = [m["content"] for m in prompt if m.get("role") == "user"]
        prompt_text = users[-1] if users else ""
    else:
        prompt_text = prompt
    return Pair(prompt, prompt_text, _text(response), ended)
