"""``spin.rejected_by: discriminator``: the explicit discriminator keeps, per prompt, the own sample it scores
least real, with held-out (cross-fitted) scores; in a SPIN run its choice is what DPO trains on."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.trainer.spin import SpinConfig, SpinTrainer
from gan_rl.trainer.spin.layout import RunLayout
from gan_rl.trainer.spin.pairs import PreferencePair, read_pairs
from gan_rl.trainer.spin.rejection import least_real, pick_rejected
from tests.conftest import SMALL_DISCRIMINATOR, quickstart_texts
from tests.spin.test_spin import SETTINGS, dataset, lora

DISC = {**SMALL_DISCRIMINATOR, "warmup_updates": 30, "learning_rate": 1e-3, "seed": 0}


def test_least_real_is_the_lowest_score_of_each_prompts_group():
    assert least_real([0.3, -1.0, 2.0, 0.5, 0.5, -3.0], 3) == [1, 2]
    assert least_real([1.0, 1.0], 2) == [0]  # equal lowest: the first
    with pytest.raises(ValueError, match="groups of 2"):
        least_real([1.0, 2.0, 3.0], 2)


def candidates(rows: int = 16) -> list[PreferencePair]:
    """Per row two samples: 0 is a real post of another row (real-looking), 1 the prompt's own words
    reversed (the clearly generated kind, as in the discriminator's own tests)."""
    texts = quickstart_texts(rows)
    out = []
    for r, row in enumerate(texts):
        prompt = row["topic"] + "\n"
        other = texts[(r + 1) % rows]["post"]
        fake = " ".join(reversed(row["topic"].split()))
        out += [
            PreferencePair(r, 0, prompt, row["post"], other),
            PreferencePair(r, 1, prompt, row["post"], fake),
        ]
    return out


@pytest.mark.slow
def test_the_sample_that_looks_generated_is_kept_and_the_ranking_repeats(tiny_model_dir):
    """Trained on real posts against both kinds of samples, the discriminator scores the reversed words
    below a real-looking post in every held-out row: each row keeps sample 1. Ranking the same samples
    again (a resumed run whose pairs were not written yet) keeps the same ones with the same scores."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pool = candidates()
    kept, stats = pick_rejected(pool, 2, DiscriminatorConfig(**DISC), model, tokenizer, seed=3)
    assert [(p.row, p.sample) for p in kept] == [(r, 1) for r in range(16)]
    assert all(p.rejected == pool[2 * p.row + 1].rejected and p.score is not None for p in kept)
    assert stats.mean_kept_score < stats.mean_score
    again, stats_again = pick_rejected(pool, 2, DiscriminatorConfig(**DISC), model, tokenizer, seed=3)
    assert again == kept and stats_again == stats


def test_too_few_rows_or_one_sample_per_prompt_are_refused(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = DiscriminatorConfig(**DISC)
    with pytest.raises(ValueError, match="at least 4"):
        pick_rejected(candidates(3), 2, config, model, tokenizer, seed=0)
    with pytest.raises(ValueError, match="samples_per_prompt >= 2"):
        pick_rejected(candidates(8)[::2], 1, config, model, tokenizer, seed=0)
    with pytest.raises(ValueError, match="discriminator.kind: 'adapter'"):
        pick_rejected(candidates(8), 2, DiscriminatorConfig(kind="adapter"), model, tokenizer, seed=0)


def test_a_spin_trainer_ranking_by_discriminator_needs_one(tmp_path, tiny_model_dir):
    args = SpinConfig(output_dir=str(tmp_path), **{**SETTINGS, "rejected_by": "discriminator"})
    with pytest.raises(ValueError, match="needs discriminator="):
        SpinTrainer(str(tiny_model_dir), args=args, train_dataset=dataset())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["full", "lora"])
def test_spin_trains_on_the_samples_the_discriminator_kept(
    tmp_path, tiny_model_dir, tiny_chat_model_dir, kind
):
    """One pair per prompt, each one of that prompt's saved samples, with its held-out score, and the
    ranking's statistics in each iteration's summary; under LoRA too, where iteration 2's encoder is the
    policy with its adapter (the generator's own hidden states read through the PeftModel)."""
    settings = {"iterations": 1 if kind == "full" else 2, "samples_per_prompt": 3}
    args = SpinConfig(output_dir=str(tmp_path), **{**SETTINGS, **settings, "rejected_by": "discriminator"})
    model_dir = tiny_chat_model_dir if kind == "lora" else tiny_model_dir
    trainer = SpinTrainer(
        AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=dataset(chat=kind == "lora"),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=lora() if kind == "lora" else None,
        discriminator=DiscriminatorConfig(**DISC),
    )
    output = trainer.train()
    layout = RunLayout(tmp_path)
    for summary in output.iterations:
        k = summary.iteration
        samples, pairs = read_pairs(layout.samples_file(k)), read_pairs(layout.pairs_file(k))
        assert len(samples) == 3 * len(pairs)
        assert [p.row for p in pairs] == sorted({s.row for s in samples})
        by_key = {(s.row, s.sample): s for s in samples}
        for pair in pairs:
            source = by_key[(pair.row, pair.sample)]
            assert (pair.prompt, pair.chosen, pair.rejected) == (
                source.prompt,
                source.chosen,
                source.rejected,
            )
            assert source.score is None and pair.score is not None
        assert summary.pairs == len(pairs)
        assert summary.rejection == json.loads(layout.rejection_file(k).read_text())
        assert summary.rejection["mean_kept_score"] <= summary.rejection["mean_score"]
