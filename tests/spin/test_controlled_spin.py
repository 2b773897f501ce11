"""SPIN moves the controlled generator to the real property, as the adversarial commands do
(``tests/cli/test_controlled.py``: the task, the starting generator and the evaluation are that test's).

The starting generator writes a positive post about half of the time (fine-tuned on mixed posts); SPIN
sees only positive real posts, as chosen, against the generator's own samples, as rejected. Nothing tells
it what "positive" is: the implicit discriminator (the policy's log-ratio against its previous iterate)
has to find the difference between the real posts and its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset

from gan_rl.cli.synthetic import POSITIVE, polarity_rows
from gan_rl.eval.metrics import distinct_n
from gan_rl.trainer.spin import SpinConfig, SpinTrainer
from tests.cli.test_controlled import cli, gan_recipe, mixed_base_recipe, positive_fraction, sampled, write

pytestmark = pytest.mark.slow

# Floors below the worst of 8 draws of this recipe (seeds 0-3, each with PyTorch's AVX512 and AVX2
# kernels, on a 2-core AMD EPYC; 1 thread, and 2 threads for two of them, which gave the same numbers),
# measured when the test was written: positive 0.84-0.92 from 0.47-0.55 (a gain of 0.29-0.45), distinct-2
# 1.12-1.38 of the real posts', 6 of 6 adjectives. Later iterations at this learning rate went on to
# degenerate, repeated text in some draws (SPIN's known failure past its fixed point), hence 3.
TARGET = 0.75  # fraction of positive posts after SPIN
GAIN = 0.15  # at least this much above the starting generator's fraction
DIVERSITY_FLOOR = 0.6  # distinct-2 at least this share of the real posts' own
MIN_ADJECTIVES = 4  # of the 6 positive adjectives, in 128 samples: no collapse onto one word


def spin_recipe(seed: int = 0) -> dict:
    """3 iterations of one epoch each over 512 positive rows (16 DPO steps of 32 pairs), one own sample per
    row, at the tiny model's learning rate."""
    return {
        "iterations": 3,
        "samples_per_prompt": 1,
        "max_completion_length": 12,
        "generation_batch_size": 128,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 32,
        "learning_rate": 5e-4,
        "lr_scheduler_type": "constant",
        "beta": 0.1,
        "save_strategy": "no",
        "logging_steps": 8,
        "gradient_checkpointing": False,
        "bf16": False,
        "report_to": "none",
        "seed": seed,
    }


def run_spin(base: Path, out: Path, seed: int = 0) -> Path:
    """SPIN from ``base`` on the positive posts, in the prompt-completion format ``gan-rl sft`` trained the
    base with (the prompt as written, plain text); the final model saved in ``out``."""
    rows = polarity_rows("positive", 512, seed=0)
    train = Dataset.from_list([{"prompt": r["topic"], "completion": r["post"]} for r in rows])
    trainer = SpinTrainer(
        str(base), args=SpinConfig(output_dir=str(out), **spin_recipe(seed)), train_dataset=train
    )
    trainer.train()
    trainer.save_model()
    return out


@pytest.fixture(scope="module")
def mixed_base(tmp_path_factory) -> Path:
    """The controlled tests' starting generator (``gan-rl sft`` on mixed positive/negative posts)."""
    work = tmp_path_factory.mktemp("controlled-spin")
    cli("sft", str(write(work / "base.yaml", mixed_base_recipe(work / "unused", work / "base"))))
    return work / "base"


def test_spin_moves_the_generator_to_the_real_property(mixed_base, tmp_path):
    recipe = write(tmp_path / "eval.yaml", gan_recipe(mixed_base, tmp_path / "unused"))
    before = positive_fraction(sampled(recipe, mixed_base, tmp_path / "before.jsonl"))
    assert 0.3 <= before <= 0.7  # the starting generator: chance level

    out = run_spin(mixed_base, tmp_path / "spin")
    after = sampled(recipe, out, tmp_path / "after.jsonl")
    fraction = positive_fraction(after)
    real = [json.loads(line)["real"] for line in (tmp_path / "after.jsonl").read_text().splitlines()]
    adjectives = {w for t in after for w in t.split() if w in POSITIVE}
    print(f"spin: positive {before:.2f} -> {fraction:.2f}, distinct-2 {distinct_n(after, 2):.3f} "
          f"(real {distinct_n(real, 2):.3f}), adjectives {len(adjectives)}")  # fmt: skip
    assert fraction >= TARGET and fraction >= before + GAIN
    assert distinct_n(after, 2) >= DIVERSITY_FLOOR * distinct_n(real, 2)
    assert len(adjectives) >= MIN_ADJECTIVES
