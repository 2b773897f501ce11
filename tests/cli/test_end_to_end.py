"""``gan-rl ppo`` / ``gan-rl reinforce`` end to end through the CLI, resume, and 2-process runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from gan_rl.cli.main import main
from tests.conftest import ROOT, TWON_DIR, base_recipe, write_recipe

RANDOM_INIT = ROOT / "tests" / "recipes" / "random-init.yaml"

pytestmark = pytest.mark.slow


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def summary_of(out: Path) -> dict:
    return json.loads((out / "run_summary.json").read_text())


def disc_weights(directory: Path) -> dict:
    return load_file(str(directory / "discriminator" / "model.safetensors"))


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce"])
def test_train_end_to_end(algorithm, tmp_path, recipe_factory):
    out = tmp_path / "out"
    output = cli(algorithm, str(recipe_factory()), "--samples", "4")
    summary = summary_of(out)
    assert summary["status"] == "completed" and summary["steps"] == 3 and summary["algorithm"] == algorithm
    assert summary["disc_rounds"] >= 3  # warm-up + one per policy update
    assert set(summary["disc_stats"]) >= {"disc/loss", "disc/acc_real", "disc/acc_generated"}
    assert len(summary["samples"]) == 4 and summary["distance_before"] is not None
    for name in (
        "model.safetensors",
        "recipe.yaml",
        "discriminator/model.safetensors",
        "discriminator/optimizer.pt",
    ):
        assert (out / name).is_file(), name
    assert "finished" in output and str(out) in output
    # The discriminator's statistics reached the trainer's logs, beside TRL's reward.
    state = json.loads((out / "discriminator" / "state.json").read_text())
    assert state["kind"] == "head" and state["trainer"]["rounds"] == summary["disc_rounds"]


def test_logs_reach_report_to_backends(tmp_path, recipe_factory):
    pytest.importorskip("tensorboard")
    path = recipe_factory(trainer={"report_to": "tensorboard"})
    cli("ppo", str(path), "--samples", "0")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events, "no tensorboard event file"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/disc/loss", "train/disc/acc_real", "train/disc/acc_generated", "train/reward"} <= tags


def test_lora_chat_generator_with_adapter_disabled_encoder(tmp_path, tiny_chat_model_dir, recipe_factory):
    path = recipe_factory(
        model_dir=tiny_chat_model_dir,
        model={"lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        data={"system_prompt": "You are a social media user."},
        discriminator={"lstm": True, "lstm_hidden": 16},
    )
    cli("ppo", str(path), "--samples", "2")
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").is_file()  # LoRA: the adapters are what is saved
    assert summary_of(out)["steps"] == 3


def test_classifier_discriminator_end_to_end(tmp_path, tiny_classifier_dir, recipe_factory):
    path = recipe_factory(discriminator={"kind": "classifier", "model": str(tiny_classifier_dir)})
    cli("reinforce", str(path), "--samples", "0")
    assert summary_of(tmp_path / "out")["disc_rounds"] >= 3


def test_model_built_from_config(tmp_path, recipe_factory):
    path = recipe_factory(
        model={
            "name_or_path": None,
            "init_config": {
                "model_type": "llama",
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
            },
            "word_tokenizer_from_data": True,
        }
    )
    cli("reinforce", str(path), "--samples", "0")
    assert (tmp_path / "out" / "initial-model" / "config.json").is_file()


def test_refuses_to_overwrite_a_finished_run(tmp_path, recipe_factory):
    path = recipe_factory()
    cli("ppo", str(path), "--samples", "0")
    result = CliRunner().invoke(main, ["ppo", str(path)])
    assert result.exit_code == 2 and "already holds a finished run" in result.output
    cli("ppo", str(path), "--samples", "0", "--overwrite")


def test_checkpoint_resume_restores_identical_discriminator(tmp_path, recipe_factory):
    path = recipe_factory(
        trainer={"max_steps": 4, "save_strategy": "steps", "save_steps": 2},
        discriminator={"replay_size": 8, "replay_fraction": 0.5},
    )
    cli("ppo", str(path), "--samples", "0")
    checkpoint = tmp_path / "out" / "checkpoint-2"
    assert (checkpoint / "discriminator" / "optimizer.pt").is_file()
    buffer = json.loads((checkpoint / "discriminator" / "buffer.rank0.json").read_text())
    assert len(buffer["pairs"]["replay"]) == 8  # the replayed generations travel with the checkpoint

    # Resume into a new directory: the discriminator right after restoring must be the checkpoint's
    # exactly (a fresh one would have been initialised and warmed up differently), and its rounds go on.
    cli("ppo", str(path), "--samples", "0", "--resume", str(checkpoint), "--output-dir", str(tmp_path / "r1"))
    saved_state = json.loads((checkpoint / "discriminator" / "state.json").read_text())
    resumed = summary_of(tmp_path / "r1")
    assert resumed["restored"]["path"] == str(checkpoint / "discriminator")
    assert resumed["restored"]["fingerprint"] == saved_state["fingerprint"]
    assert resumed["warmup_stats"] == {}  # no warm-up on resume
    assert resumed["disc_rounds"] == saved_state["trainer"]["rounds"] + 2  # one round per remaining step
    assert resumed["steps"] == 4

    # Resumed training is the same training (replay included): the final discriminator equals the
    # uninterrupted run's.
    final, final_resumed = disc_weights(tmp_path / "out"), disc_weights(tmp_path / "r1")
    assert all(torch.allclose(final[k], final_resumed[k], atol=1e-6) for k in final)


def test_resume_with_a_changed_discriminator_is_a_clear_error(tmp_path, recipe_factory):
    path = recipe_factory(trainer={"max_steps": 2, "save_strategy": "steps", "save_steps": 2})
    cli("ppo", str(path), "--samples", "0")
    checkpoint = tmp_path / "out" / "checkpoint-2"
    result = CliRunner().invoke(
        main,
        [
            "ppo",
            str(path),
            "--resume",
            str(checkpoint),
            "--output-dir",
            str(tmp_path / "r"),
            "--set",
            "discriminator.d_model=64",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "does not fit the recipe's 'discriminator' section" in result.output
    assert not (tmp_path / "r" / "run_summary.json").exists()


def test_trl_evaluation_runs_on_the_test_split(tmp_path, recipe_factory):
    path = recipe_factory(
        trainer={"eval_strategy": "steps", "eval_steps": 2, "per_device_eval_batch_size": 8}
    )
    cli("reinforce", str(path), "--samples", "0")
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    assert any("eval_reward" in entry for entry in history)


def test_resume_latest_in_an_interrupted_output_dir(tmp_path, recipe_factory):
    path = recipe_factory(trainer={"max_steps": 2, "save_strategy": "steps", "save_steps": 2})
    cli("ppo", str(path), "--samples", "0")
    out = tmp_path / "out"
    (out / "run_summary.json").unlink()  # as if the run had been killed after its checkpoint
    result = CliRunner().invoke(main, ["ppo", str(path)])
    assert result.exit_code == 2 and "--resume" in result.output
    cli("ppo", str(path), "--samples", "0", "--resume", "--set", "trainer.max_steps=4")
    assert summary_of(out)["steps"] == 4


def test_two_processes_keep_identical_discriminators(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    # use_cpu: accelerate's torchrun launcher with the gloo backend (its --cpu launcher starts one process).
    recipe = base_recipe(
        tiny_model_dir,
        out,
        trainer={
            "max_steps": 3,
            "per_device_train_batch_size": 4,
            "use_cpu": True,
            "save_strategy": "steps",
            "save_steps": 2,
        },
        discriminator={"replay_size": 8},
        # The SFT term's extra forward pass must also work under DDP (gradients averaged with the policy's).
        sft_loss={"coef": 0.1, "batch_size": 2},
    )
    path = write_recipe(tmp_path / "r.yaml", recipe)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "gan_rl",
        "ppo",
        str(path),
        "--samples",
        "2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = summary_of(out)
    assert len(summary["fingerprints"]) == 2
    assert summary["fingerprints"][0] == summary["fingerprints"][1]
    assert summary["disc_rounds"] >= 3
    assert proc.stdout.count("finished") == 1  # only the main process reports
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("sft/loss" in h for h in history)
    # Each process's buffer travels with the checkpoint (written by the main process).
    checkpoint = out / "checkpoint-2" / "discriminator"
    assert sorted(p.name for p in checkpoint.glob("buffer.rank*.json")) == [
        "buffer.rank0.json",
        "buffer.rank1.json",
    ]


def test_random_init_recipe_runs(tmp_path):
    """tests/recipes/random-init.yaml: a generator trained adversarially from random weights (the shipped
    quickstart is the controlled task; tests/cli/test_demo.py runs it)."""
    output = cli("ppo", str(RANDOM_INIT), "--output-dir", str(tmp_path / "qs"))
    summary = summary_of(tmp_path / "qs")
    assert summary["steps"] == 1200 and summary["samples"]
    # The loop does something real: held-out samples move toward the real posts' word distribution
    # (a measure no part of training sees), and the final discriminator finds them more real. Margins
    # from benchmarks/controlled_seeds.py --cases quickstart (seeds 0-3, AVX512 and AVX2 kernels): the
    # distance fell by 0.054-0.193 and P(real) rose by 0.16-0.31; thresholds near a third of the smallest.
    assert summary["distance_after"] < summary["distance_before"] - 0.02
    assert summary["judge_after"] > summary["judge_before"] + 0.05
    assert "before" in output and "after" in output and "word distance" in output


@pytest.mark.skipif(
    not (TWON_DIR / "right.train.parquet").is_file(), reason=f"TWON data not found at {TWON_DIR}"
)
def test_twon_recipe_runs_with_a_tiny_chat_model_in_place_of_qwen(tmp_path, tiny_chat_model_dir):
    # The shipped recipe as it is (data paths, columns, system prompt, LoRA, the head with an LSTM, the
    # ppo section), with only what a CPU test cannot afford overridden.
    overrides = {
        "model.name_or_path": str(tiny_chat_model_dir),
        "model.dtype": "float32",
        "model.gradient_checkpointing": "false",
        "data.max_train_samples": "32",
        "data.max_test_samples": "4",
        "discriminator.warmup_samples": "8",
        "discriminator.warmup_updates": "2",
        "discriminator.encoder_layer": "1",  # the tiny model has 2 layers, Qwen2.5-0.5B 24
        "trainer.max_steps": "2",
        "trainer.per_device_train_batch_size": "8",
        "trainer.num_generations": "4",
        "trainer.max_completion_length": "8",
        "trainer.bf16": "false",
        "trainer.report_to": "none",
        "trainer.save_strategy": "no",
    }
    args = [x for key, value in overrides.items() for x in ("--set", f"{key}={value}")]
    out = tmp_path / "twon"
    cli("ppo", str(ROOT / "recipes" / "twon.yaml"), *args, "--output-dir", str(out), "--samples", "2")
    summary = summary_of(out)
    assert summary["steps"] == 2 and summary["disc_rounds"] >= 2
    assert (out / "adapter_model.safetensors").is_file()
    assert summary["samples"][0]["real"]  # a real TWON post from the test split


def test_bradley_terry_discriminator_end_to_end(tmp_path, recipe_factory):
    path = recipe_factory(discriminator={"loss": "bradley_terry", "max_accuracy": 1.0})
    cli("ppo", str(path), "--samples", "2")
    summary = summary_of(tmp_path / "out")
    assert summary["status"] == "completed" and summary["disc_rounds"] >= 3
    stats = summary["disc_stats"]
    assert (
        stats["disc/acc_real"] == stats["disc/acc_generated"]
    )  # ranking accuracy of (real, generated) pairs
    state = json.loads((tmp_path / "out" / "discriminator" / "state.json").read_text())
    assert state["config"]["loss"] == "bradley_terry"
