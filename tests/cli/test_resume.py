"""Resume and failure: only complete checkpoints count, a resumed run is the same run (bit for bit), and a
non-finite discriminator stops the run with one line instead of "completed"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from gan_rl.cli.main import main

pytestmark = pytest.mark.slow


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.output


def ppo(path: Path, *args: str) -> str:
    """``gan-rl ppo RECIPE --samples 0 ARGS``, which must succeed."""
    return ok("ppo", str(path), "--samples", "0", *args)


def summary_of(out: Path) -> dict:
    return json.loads((out / "run_summary.json").read_text())


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


CHECKPOINTED = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2}
# Everything that keeps state beside the weights: the real-feature cache, replay and the real pool.
STATEFUL = {"replay_size": 8, "replay_fraction": 0.5, "real_pool_size": 16, "cache_size": 64}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"sft_loss": {"coef": 0.5, "batch_size": 4}},
        {"discriminator": {"loss": "bradley_terry"}},
        # A real pool too small to hold the replayed generations' prompts: their partners come from the
        # checkpointed partner map alone (without it the resumed run drops those pairs).
        {"discriminator": {"loss": "bradley_terry", "real_pool_size": 1}},
    ],
    ids=["bce", "sft-term", "bradley-terry", "bradley-terry-small-pool"],
)
def test_resumed_run_is_bit_identical_to_the_uninterrupted_one(tmp_path, recipe_factory, extra):
    """Defect 6: the real-feature cache, replay, pool, the SFT term's draws and Bradley-Terry partners
    all survive a resume exactly."""
    sections = {
        "trainer": CHECKPOINTED,
        **extra,
        "discriminator": {**STATEFUL, **extra.get("discriminator", {})},
    }
    path = recipe_factory(**sections)
    ppo(path)
    out = tmp_path / "out"
    ppo(path, "--resume", str(out / "checkpoint-2"), "--output-dir", str(tmp_path / "r"))
    for name in ("discriminator/model.safetensors", "model.safetensors"):
        a, b = weights(out / name), weights(tmp_path / "r" / name)
        diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        assert diff == 0.0, f"{name}: resumed run differs by up to {diff:g}"


def test_resume_skips_a_checkpoint_without_discriminator(tmp_path, recipe_factory):
    """Defect 1: a kill after TRL's files, before the discriminator's. Resume takes the previous complete
    checkpoint; naming the incomplete one is an error unless --fresh-discriminator."""
    path = recipe_factory(trainer=CHECKPOINTED)
    ppo(path)
    out = tmp_path / "out"
    shutil.rmtree(out / "checkpoint-4" / "discriminator")
    (out / "run_summary.json").unlink()

    result = invoke("ppo", str(path), "--samples", "0", "--resume", str(out / "checkpoint-4"))
    assert result.exit_code == 2, result.output
    assert "lacks discriminator/" in result.output and "--fresh-discriminator" in result.output

    ppo(path, "--resume")
    summary = summary_of(out)
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert summary["restored"]["path"] == str(out / "checkpoint-2" / "discriminator")
    assert (out / "checkpoint-4" / "discriminator" / "state.json").is_file()  # rewritten, whole


def test_fresh_discriminator_is_explicit(tmp_path, recipe_factory):
    path = recipe_factory(trainer={"max_steps": 2, "save_strategy": "steps", "save_steps": 2})
    ppo(path)
    out = tmp_path / "out"
    shutil.rmtree(out / "checkpoint-2" / "discriminator")
    (out / "run_summary.json").unlink()
    result = invoke("ppo", str(path), "--samples", "0", "--resume", "--set", "trainer.max_steps=3")
    assert result.exit_code == 2 and "--fresh-discriminator" in result.output, result.output
    ppo(path, "--resume", "--fresh-discriminator", "--set", "trainer.max_steps=3")
    summary = summary_of(out)
    assert summary["steps"] == 3 and summary["restored"] == {} and summary["warmup_stats"]


def test_resume_falls_back_past_a_partial_checkpoint(tmp_path, recipe_factory):
    """Defect 2: an empty checkpoint-N (a kill while it was created) is skipped, not a traceback."""
    path = recipe_factory(trainer={"max_steps": 2, "save_strategy": "steps", "save_steps": 2})
    ppo(path)
    out = tmp_path / "out"
    (out / "run_summary.json").unlink()
    (out / "checkpoint-6").mkdir()
    ppo(path, "--resume", "--set", "trainer.max_steps=3")
    assert summary_of(out)["restored"]["path"] == str(out / "checkpoint-2" / "discriminator")


def test_no_complete_checkpoint_is_one_line(tmp_path, recipe_factory):
    path = recipe_factory()
    out = tmp_path / "out"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "recipe.yaml").write_text("{}")
    result = invoke("ppo", str(path), "--samples", "0", "--resume")
    assert result.exit_code == 2 and "no complete checkpoint" in result.output, result.output
    assert "checkpoint-2 lacks trainer_state.json" in result.output


def test_non_finite_discriminator_stops_the_run(tmp_path, recipe_factory):
    """Defect 3: a NaN discriminator gave NaN rewards, an unchanged policy and "completed"."""
    path = recipe_factory(discriminator={"learning_rate": 1e10})
    result = invoke("ppo", str(path), "--samples", "0")
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("training failed: discriminator round") and "not finite" in line
    assert "learning_rate" in line
    assert not (tmp_path / "out" / "run_summary.json").exists()


@pytest.mark.parametrize("clip", [[".nan", 1.0], [-1.0, ".inf"]])
def test_non_finite_clip_is_refused(tmp_path, recipe_factory, clip):
    path = recipe_factory()
    result = invoke("check", str(path), "--set", f"discriminator.reward.clip=[{clip[0]}, {clip[1]}]")
    assert result.exit_code == 2 and "clip" in result.output, result.output


def test_batch_normalised_equal_rewards_are_zero():
    from gan_rl.discriminator.buffer import SampleBuffer
    from gan_rl.discriminator.config import DiscriminatorRewardConfig
    from gan_rl.trainer.reward import DiscriminatorReward

    reward = DiscriminatorReward(None, SampleBuffer(), DiscriminatorRewardConfig(normalize="batch"))
    assert reward.transform(torch.full((8,), 0.7310586)).tolist() == [0.0] * 8
    moved = reward.transform(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert moved.mean().abs().item() < 1e-6 and abs(moved.std().item() - 1.0) < 1e-5


def test_output_dir_that_is_a_file_is_one_line(tmp_path, recipe_factory):
    target = tmp_path / "file"
    target.write_text("x")
    result = invoke("ppo", str(recipe_factory()), "--output-dir", str(target))
    assert result.exit_code == 2 and "is a file" in result.output, result.output


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0, reason="root")
def test_output_dir_without_permission_is_one_line(tmp_path, recipe_factory):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = invoke("ppo", str(recipe_factory()), "--output-dir", str(locked / "run"))
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 2 and "permission denied" in result.output, result.output


def test_prompts_past_learned_positions_are_one_line(tmp_path, tiny_model_dir, recipe_factory):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = GPT2Config(
        vocab_size=len(tok), n_positions=8, n_embd=16, n_layer=1, n_head=2, pad_token_id=tok.pad_token_id
    )
    model_dir = tmp_path / "gpt2"
    GPT2LMHeadModel(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    result = invoke("ppo", str(recipe_factory(model_dir=model_dir)), "--samples", "0")
    assert result.exit_code == 2, result.output
    assert "learned position table" in result.output and "max_completion_length" in result.output
