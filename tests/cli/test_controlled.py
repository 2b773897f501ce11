"""Evidence that the adversarial loop moves a generator toward the real data (a controlled task).

The task (``gan_rl.cli.synthetic``, ``polarity-*``): topic -> short post with one adjective. The starting
generator is a tiny model fine-tuned on *mixed* posts (positive and negative adjectives, half and half),
so it writes a positive post at chance level. The adversarial run sees only *positive* real posts. The
property "the post is positive" is known to this test (``polarity_of``), never to training: the
discriminator has to discover it, and the policy has to follow it. No SFT loss term is used, so the
movement comes from the discriminator's reward alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gan_rl.cli.main import main
from gan_rl.cli.synthetic import POSITIVE, polarity_of
from gan_rl.eval.metrics import distinct_n

pytestmark = pytest.mark.slow

# The floors a working run must reach. Each sits well below the worst of 8 draws (seeds 0-3, each with
# PyTorch's AVX512 and AVX2 kernels) measured by benchmarks/controlled_seeds.py for ppo, reinforce and
# gumbel with KL (results/controlled-seeds/; tests/README.md): positive >= 0.94, distinct-2 >= 0.77 of the
# real posts', 6 adjectives, >= 277 rounds trained. A new CPU is one more draw from that spread.
TARGET = 0.8  # fraction of positive posts the trained generator must reach
DIVERSITY_FLOOR = 0.6  # distinct-2 at least this share of the real posts' own (~0.2 on 128 posts)
MIN_ADJECTIVES = 4  # of the 6 positive adjectives, in 128 samples: no collapse onto one word

TINY = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 64,
}
DATA = {"prompt_column": "topic", "response_column": "post"}
EVALUATE = {"max_samples": 128, "max_new_tokens": 12, "seed": 0}


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def write(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def sampled(recipe: Path, model: Path, out: Path) -> list[str]:
    cli("generate", str(recipe), "--model", str(model), "--output", str(out))
    return [json.loads(line)["generated"] for line in out.read_text().splitlines()]


def positive_fraction(texts: list[str]) -> float:
    return sum(polarity_of(t) == "positive" for t in texts) / len(texts)


def mixed_base_recipe(unused: Path, out: Path, seed: int = 0) -> dict:
    """``gan-rl sft`` of a tiny generator on mixed positive/negative posts (``seed``: its initialisation and
    data order; benchmarks/controlled_seeds.py varies it)."""
    return {
        "model": {
            "init_config": TINY,
            "init_seed": seed,
            "word_tokenizer_from_data": True,
            "gradient_checkpointing": False,
        },
        "data": {
            "train": {"synthetic": "polarity-mixed", "rows": 1024, "seed": 0},
            "test": {"synthetic": "polarity-mixed", "rows": 64, "seed": 1},
            **DATA,
        },
        "trainer": {"output_dir": str(unused), "report_to": "none", "seed": seed},
        "sft": {
            "output_dir": str(out),
            "max_steps": 200,
            "learning_rate": 3e-3,
            "lr_scheduler_type": "constant",
            "per_device_train_batch_size": 32,
            "logging_steps": 50,
            "save_strategy": "no",
        },
    }


@pytest.fixture(scope="module")
def mixed_base(tmp_path_factory) -> Path:
    """A tiny generator fine-tuned (``gan-rl sft``) on mixed positive/negative posts."""
    work = tmp_path_factory.mktemp("controlled")
    cli("sft", str(write(work / "base.yaml", mixed_base_recipe(work / "unused", work / "base"))))
    return work / "base"


def gan_recipe(base: Path, out: Path, seed: int = 0) -> dict:
    """The adversarial run on positive posts only (``seed``: the policy's and the discriminator's)."""
    return {
        "model": {"name_or_path": str(base), "gradient_checkpointing": False},
        "data": {
            "train": {"synthetic": "polarity-positive", "rows": 512, "seed": 0},
            "test": {"synthetic": "polarity-positive", "rows": 128, "seed": 7},
            **DATA,
        },
        "discriminator": {
            "kind": "head",
            "encoder_layer": 0,
            "d_model": 64,
            "num_layers": 1,
            "num_heads": 4,
            "max_length": 48,
            "learning_rate": 1e-3,
            "batch_size": 64,
            "updates_per_round": 2,
            "replay_size": 256,
            "reward": {"form": "logit", "clip": [-5.0, 5.0]},
            "seed": seed,
        },
        "evaluate": EVALUATE,
        "trainer": {
            "output_dir": str(out),
            "max_steps": 300,
            "learning_rate": 3e-4,
            "per_device_train_batch_size": 32,
            "num_generations": 8,
            "max_completion_length": 12,
            "beta": 0.02,  # a little KL to the starting generator keeps the posts varied
            "logging_steps": 25,
            "save_strategy": "no",
            "report_to": "none",
            "seed": seed,
        },
    }


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce"])
def test_adversarial_training_moves_the_generator_to_the_real_property(algorithm, mixed_base, tmp_path):
    recipe = write(tmp_path / "gan.yaml", gan_recipe(mixed_base, tmp_path / algorithm))
    before = sampled(recipe, mixed_base, tmp_path / "before.jsonl")
    assert 0.3 <= positive_fraction(before) <= 0.7  # the starting generator: chance level

    cli(algorithm, str(recipe), "--samples", "0")
    after = sampled(recipe, tmp_path / algorithm, tmp_path / "after.jsonl")
    fraction = positive_fraction(after)
    adjectives = {w for t in after for w in t.split() if w in POSITIVE}
    real = [json.loads(line)["real"] for line in (tmp_path / "after.jsonl").read_text().splitlines()]
    print(f"{algorithm}: positive {positive_fraction(before):.2f} -> {fraction:.2f}, "
          f"distinct-2 {distinct_n(after, 2):.3f} (real {distinct_n(real, 2):.3f}), adjectives {len(adjectives)}")  # fmt: skip
    assert fraction >= TARGET
    assert distinct_n(after, 2) >= DIVERSITY_FLOOR * distinct_n(real, 2)
    assert len(adjectives) >= MIN_ADJECTIVES
    # The discriminator did the work: it kept training between policy updates (the guard may skip some).
    summary = json.loads((tmp_path / algorithm / "run_summary.json").read_text())
    assert summary["disc_rounds"] + summary["disc_skipped_rounds"] >= 300
    assert summary["disc_rounds"] >= 100


def run_gumbel(
    mixed_base: Path, tmp_path: Path, name: str, gumbel: dict
) -> tuple[float, float, float, int, dict]:
    """``gan-rl gumbel`` on the controlled recipe (its ``gumbel:`` section set): the positive fraction
    before and after, distinct-2 of the samples and of the real posts, the positive adjectives used, and
    the run summary."""
    recipe = gan_recipe(mixed_base, tmp_path / name)
    recipe["gumbel"] = gumbel
    path = write(tmp_path / f"{name}.yaml", recipe)
    before = positive_fraction(sampled(path, mixed_base, tmp_path / "before.jsonl"))
    cli("gumbel", str(path), "--samples", "0")
    after = sampled(path, tmp_path / name, tmp_path / f"{name}.jsonl")
    real = [json.loads(line)["real"] for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    adjectives = {w for t in after for w in t.split() if w in POSITIVE}
    summary = json.loads((tmp_path / name / "run_summary.json").read_text())
    print(f"gumbel {name}: positive {before:.2f} -> {positive_fraction(after):.2f}, distinct-2 "
          f"{distinct_n(after, 2):.3f} (real {distinct_n(real, 2):.3f}), adjectives {len(adjectives)}")  # fmt: skip
    assert 0.3 <= before <= 0.7
    return positive_fraction(after), distinct_n(after, 2), distinct_n(real, 2), len(adjectives), summary


def test_gumbel_with_kl_reaches_the_same_floors(mixed_base, tmp_path):
    """Back-propagation through soft Gumbel-softmax tokens (tau 1) with a KL of 0.1 to the starting
    generator (``gumbel: {beta: 0.1}``; the policy-gradient runs above use 0.02) reaches the floors of
    ppo and reinforce: over 8 draws 0.95-0.98 positive, distinct-2 0.77-1.43 of the real posts', 6 of 6
    adjectives (docs/gumbel.md)."""
    fraction, distinct, real_distinct, adjectives, summary = run_gumbel(
        mixed_base, tmp_path, "gumbel-kl", {"beta": 0.1}
    )
    assert fraction >= TARGET
    assert distinct >= DIVERSITY_FLOOR * real_distinct
    assert adjectives >= MIN_ADJECTIVES
    assert summary["algorithm"] == "gumbel" and (tmp_path / "gumbel-kl" / "discriminator").is_dir()
    assert summary["disc_rounds"] + summary["disc_skipped_rounds"] >= 300
    assert summary["disc_rounds"] >= 100


def test_gumbel_straight_through_fails_as_in_rlgaf(mixed_base, tmp_path):
    """Straight-through tokens with the policy-gradient runs' small KL (0.02) fail, RLGAF's finding: the
    discriminator wins (the accuracy guard skips a large share of its rounds) and the run misses the
    floors that the KL run above reaches. *How* it fails is chaotic and differs from CPU to CPU: collapse
    into repeated adjectives (seed 0 with AVX512 kernels: 0.91 positive, distinct-2 0.03 against the real
    posts' 0.21), the same with fewer positives (seed 0 with AVX2 kernels: 0.60), or short degenerate posts
    (seed 1: 0.42 positive; seeds 2-3: none). So the test asserts the failure, not its form. Over 8 draws
    (seeds 0-3, AVX512 and AVX2 kernels; benchmarks/controlled_seeds.py, docs/gumbel.md) every
    straight-through run missed the floors and the guard skipped 73-234 of 301 rounds, where the working
    runs (ppo, reinforce, gumbel with KL) skipped at most 24."""
    fraction, distinct, real_distinct, adjectives, summary = run_gumbel(
        mixed_base, tmp_path, "gumbel-st", {"straight_through": True}
    )
    reached = (
        fraction >= TARGET and distinct >= DIVERSITY_FLOOR * real_distinct and adjectives >= MIN_ADJECTIVES
    )
    assert not reached, "straight-through reached the floors: update docs/gumbel.md and this test"
    assert summary["disc_skipped_rounds"] >= 50  # the discriminator wins: the guard skips its rounds
