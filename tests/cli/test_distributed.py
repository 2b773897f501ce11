"""DeepSpeed ZeRO-2 / ZeRO-3 (2 CPU processes over gloo), the lockstep of the frozen encoder, and the
errors for a requested backend that a run would not use.

The ZeRO runs go through ``accelerate launch --config_file recipes/accelerate/deepspeed_zero*_cpu.yaml``,
exactly as a user launches them; each is a few policy steps of the tiny model (see docs/distributed.md).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from gan_rl.cli.main import main
from tests.conftest import REAL, ROOT, TINY_LLAMA, base_recipe, head_config, write_recipe

ACCELERATE = ROOT / "recipes" / "accelerate"
has_deepspeed = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed (pip install -e '.[dev]')",
)


def child_env() -> dict[str, str]:
    """The launched processes import this checkout's gan_rl, one thread each (2 cores, 2 processes)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}


def free_port() -> str:
    """A free TCP port for the processes' rendezvous (another run on the machine may hold the default)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def launch(config: str, recipe: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file recipes/accelerate/CONFIG -m gan_rl ARGS`` (2 processes)."""
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE / config),
        "--main_process_port",
        free_port(),
        "-m",
        "gan_rl",
        *args[:1],
        str(recipe),
        *args[1:],
    ]
    return subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300, cwd=cwd)


def summary_of(out: Path) -> dict:
    return json.loads((out / "run_summary.json").read_text())


def zero_recipe(tmp_path: Path, model_dir: Path, *, lora: bool, beta: float, **sections) -> Path:
    """The tests' small recipe for DeepSpeed on CPU: gloo (not use_cpu, which turns DeepSpeed off),
    float32, the SFT term on, 2 steps."""
    model = {"lora": {"r": 4, "alpha": 8, "dropout": 0.0}} if lora else {}
    recipe = base_recipe(
        model_dir,
        tmp_path / "out",
        model=model,
        trainer={
            "max_steps": 2,
            "per_device_train_batch_size": 4,
            "ddp_backend": "gloo",
            "beta": beta,
            **sections.pop("trainer", {}),
        },
        # Few prompts, drawn with repeats, the real-feature cache on and one pair per encoder chunk: each
        # rank misses the cache on its own pairs, so the ranks' numbers of encoder forwards differ (what
        # the encoder's lockstep evens out). DeepSpeed keeps a model this small gathered after its first
        # forward, so these runs would not notice a lost lockstep: the torchrun test below checks it.
        discriminator={"replay_size": 8, "cache_size": 64, "encode_batch_size": 1},
        sft_loss={"coef": 0.1, "batch_size": 2},
        **sections,
    )
    recipe["data"]["train"]["rows"] = 8
    return write_recipe(tmp_path / "r.yaml", recipe)


def check_run(proc: subprocess.CompletedProcess, out: Path, stage: int, steps: int) -> dict:
    """What every ZeRO run must show: success, DeepSpeed really in use, equal discriminators on both
    ranks, the SFT term logged, held-out samples from every rank gathered into the summary."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = summary_of(out)
    assert summary["distributed"] == f"deepspeed-zero{stage}"
    assert summary["steps"] == steps
    assert len(summary["fingerprints"]) == 2
    assert summary["fingerprints"][0] == summary["fingerprints"][1]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("sft/loss" in h for h in history)
    # 2 held-out prompts: one sampled by each rank, both before and after training, and judged.
    assert len(summary["samples"]) == 2
    assert all(s["before"] is not None and s["after"] is not None for s in summary["samples"])
    assert summary["judge_before"] is not None and summary["judge_after"] is not None
    assert proc.stdout.count("policy steps") == 1  # only the main process prints the summary table
    return summary


# -- the ZeRO runs ----------------------------------------------------------------------------------------


@has_deepspeed
@pytest.mark.slow
@pytest.mark.parametrize(
    ("lora", "beta", "algorithm"),
    [(True, 0.0, "ppo"), (False, 0.1, "reinforce")],
    ids=["zero2-lora-beta0-ppo", "zero2-full-beta0.1-reinforce"],
)
def test_zero2_two_cpu_processes(tmp_path, tiny_model_dir, lora, beta, algorithm):
    path = zero_recipe(tmp_path, tiny_model_dir, lora=lora, beta=beta)
    proc = launch("deepspeed_zero2_cpu.yaml", path, algorithm, "--samples", "2", cwd=tmp_path)
    check_run(proc, tmp_path / "out", stage=2, steps=2)


@has_deepspeed
@pytest.mark.slow
def test_zero3_config_built_model_full_finetuning_beta0(tmp_path):
    """No LoRA, beta 0: the encoder reads a frozen copy of the initial generator, prepared as TRL prepares
    its reference (sharded under ZeRO-3). The generator is built from a config by the main process alone,
    outside zero.Init, and loaded by both (it deadlocked when built under zero.Init on one rank)."""
    recipe = base_recipe(ROOT, tmp_path / "out")
    recipe["model"] = {
        "init_config": dict(TINY_LLAMA),
        "init_seed": 0,
        "word_tokenizer_from_data": True,
        "gradient_checkpointing": False,
    }
    recipe["trainer"].update(
        {"max_steps": 2, "per_device_train_batch_size": 4, "ddp_backend": "gloo", "beta": 0.0}
    )
    recipe["discriminator"].update({"replay_size": 8, "cache_size": 64, "encode_batch_size": 1})
    recipe["data"]["train"]["rows"] = 8
    recipe["sft_loss"] = {"coef": 0.1, "batch_size": 2}
    path = write_recipe(tmp_path / "r.yaml", recipe)
    proc = launch("deepspeed_zero3_cpu.yaml", path, "ppo", "--samples", "2", cwd=tmp_path)
    check_run(proc, tmp_path / "out", stage=3, steps=2)
    assert "a frozen copy of the initial generator" in proc.stderr + proc.stdout


@has_deepspeed
@pytest.mark.slow
def test_zero3_full_finetuning_with_reference_model(tmp_path, tiny_model_dir):
    """No LoRA, beta > 0: the encoder reads TRL's reference model (a ZeRO-3 inference engine)."""
    path = zero_recipe(tmp_path, tiny_model_dir, lora=False, beta=0.1)
    proc = launch("deepspeed_zero3_cpu.yaml", path, "ppo", "--samples", "2", cwd=tmp_path)
    check_run(proc, tmp_path / "out", stage=3, steps=2)
    assert "the trainer's reference model" in proc.stderr + proc.stdout


@has_deepspeed
@pytest.mark.slow
def test_zero3_lora_checkpoint_and_resume(tmp_path, tiny_model_dir):
    """LoRA, beta > 0 (the reference and the encoder: the policy with adapters off), a checkpoint at step
    2, then a resumed run to step 3 that restores the checkpoint's discriminator and buffers."""
    path = zero_recipe(
        tmp_path, tiny_model_dir, lora=True, beta=0.1, trainer={"save_strategy": "steps", "save_steps": 2}
    )
    out = tmp_path / "out"
    proc = launch("deepspeed_zero3_cpu.yaml", path, "ppo", "--samples", "2", cwd=tmp_path)
    check_run(proc, out, stage=3, steps=2)
    checkpoint = out / "checkpoint-2"
    assert any(checkpoint.glob("global_step*"))  # DeepSpeed's own checkpoint of the sharded state
    assert (checkpoint / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in (checkpoint / "discriminator").glob("buffer.rank*.json")) == [
        "buffer.rank0.json",
        "buffer.rank1.json",
    ]
    saved = json.loads((checkpoint / "discriminator" / "state.json").read_text())["fingerprint"]
    (out / "run_summary.json").unlink()  # as if killed after the checkpoint
    proc = launch(
        "deepspeed_zero3_cpu.yaml",
        path,
        "ppo",
        "--samples",
        "2",
        "--resume",
        "--set",
        "trainer.max_steps=3",
        cwd=tmp_path,
    )
    summary = check_run(proc, out, stage=3, steps=3)
    assert summary["restored"]["path"].endswith("checkpoint-2/discriminator")
    assert summary["restored"]["fingerprint"] == saved
    assert summary["disc_rounds"] + summary["disc_skipped_rounds"] >= 3  # trained or skipped by the guard


# -- refusing a backend the run would not use -------------------------------------------------------------


def error_of(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output.strip()


def test_deepspeed_with_use_cpu_is_refused(tmp_path, recipe_factory, monkeypatch):
    """accelerate drops DeepSpeed when use_cpu is on: an error (one line, exit 2), not plain DDP."""
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    code, line = error_of("ppo", str(recipe_factory(trainer={"use_cpu": True})))
    assert code == 2 and len(line.splitlines()) == 1
    assert "DeepSpeed" in line and "use_cpu" in line and "ddp_backend: gloo" in line


def test_deepspeed_on_cpu_needs_a_cpu_backend(tmp_path, recipe_factory, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: DeepSpeed's default backend applies")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    code, line = error_of("ppo", str(recipe_factory(trainer={"ddp_backend": "nccl"})))
    assert code == 2 and "trainer.ddp_backend" in line and "gloo" in line


def test_fsdp_on_a_cpu_run_is_refused(tmp_path, recipe_factory, monkeypatch):
    """accelerate applies FSDP to GPU runs only; on CPU it would silently train with DDP."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: FSDP would apply")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    code, line = error_of("ppo", str(recipe_factory(trainer={"use_cpu": True})))
    assert code == 2 and len(line.splitlines()) == 1
    assert "FSDP" in line and "DDP" in line and not (tmp_path / "out" / "initial-model").exists()


@pytest.mark.slow
def test_fsdp_config_launched_on_cpu_is_refused_by_every_process(tmp_path, recipe_factory):
    """The shipped fsdp2.yaml launched on a machine without a GPU: both processes stop with the error."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: FSDP would apply")
    path = recipe_factory(trainer={"use_cpu": True})
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE / "fsdp2.yaml"),
        "--main_process_port",
        free_port(),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "-m",
        "gan_rl",
        "ppo",
        str(path),
    ]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.count("asks for FSDP") == 2, proc.stderr[-3000:]


# -- the pieces, in one process ---------------------------------------------------------------------------


def test_sharded_encoder_runs_as_many_forwards_as_the_busiest_rank_and_keeps_the_bits(generator, monkeypatch):
    """Under ZeRO-3 / FSDP a rank with fewer chunks to encode pads with dummy forwards up to the largest
    count over ranks (here: another rank is said to have 5 chunks), and its real features are the same
    bits as the plain (unsharded) encoder's: the whole root forward reads the same hidden state."""
    from gan_rl.discriminator import head as disc_module
    from gan_rl.discriminator.encoder import FrozenEncoder
    from gan_rl.discriminator.factory import build_discriminator

    model, tok = generator
    pairs = REAL[:6]
    plain = build_discriminator(
        head_config(encode_batch_size=4),
        encoder=FrozenEncoder(tok, model.config.hidden_size, layer=1, generator_format=True, model=model),
    )
    expected = plain.featurize(pairs)

    calls: list[tuple[int, ...]] = []

    def runner_forward(**inputs):
        calls.append(tuple(inputs["input_ids"].shape))
        return model(**inputs)

    encoder = FrozenEncoder(tok, model.config.hidden_size, layer=1, generator_format=True)
    encoder.bind(model, runner=lambda: runner_forward, sharded=True)
    sharded = build_discriminator(head_config(encode_batch_size=4), encoder=encoder)
    monkeypatch.setattr(disc_module, "max_across_ranks", lambda mine: max(mine, 5))
    features = sharded.featurize(pairs)
    assert len(calls) == 5  # 2 real chunks (6 pairs, 4 per chunk) + 3 dummies
    assert sum(1 for shape in calls if shape[0] == 1) == 3
    for got, want in zip(features, expected, strict=True):
        assert torch.equal(got["hidden"], want["hidden"])
        assert torch.equal(got["response_mask"], want["response_mask"])
    # Nothing to encode is still a collective: the rank takes part with dummies only.
    calls.clear()
    assert sharded.featurize([]) == [] and len(calls) == 5
    # The cache path too: every pair is cached now, and the call still runs its share.
    sharded.featurize(pairs, cache=True)
    calls.clear()
    sharded.featurize(pairs, cache=True)
    assert len(calls) == 5


def test_a_restored_buffer_runs_the_encoder_even_without_a_saved_state(generator, tmp_path):
    """A process beyond those that were saved loads an empty buffer through the same featurize calls as
    the others (each a collective under ZeRO-3 / FSDP)."""
    from gan_rl.discriminator.buffer import SampleBuffer
    from gan_rl.discriminator.config import DiscriminatorRewardConfig
    from gan_rl.discriminator.trainer import DiscriminatorTrainer
    from gan_rl.trainer.callback import load_discriminator, save_discriminator
    from gan_rl.trainer.reward import DiscriminatorReward
    from tests.conftest import make_head

    disc = make_head(generator)
    trainer = DiscriminatorTrainer(disc, disc.config)
    reward = DiscriminatorReward(disc, SampleBuffer(), DiscriminatorRewardConfig())
    save_discriminator(tmp_path, trainer, reward)  # no buffer files: as for an extra process
    seen: list[int] = []
    original = disc.featurize

    def counting(pairs, cache=False):
        seen.append(len(pairs))
        return original(pairs, cache=cache)

    disc.featurize = counting  # type: ignore[method-assign]
    load_discriminator(tmp_path, trainer, reward, SampleBuffer(replay_size=4))
    assert seen == [0, 0, 0, 0, 0]  # the buffer's four groups and the Bradley-Terry partners


def test_sampling_settings_follow_the_recipe_when_trl_has_none(caplog):
    """With vLLM TRL builds no generate settings; the warm-up and summary sample with the recipe's own
    (temperature, top_p, top_k, min_p, repetition penalty, generation_kwargs), vLLM-only keys named."""
    from types import SimpleNamespace

    from gan_rl.utils.backends import sampling_settings

    tok = SimpleNamespace(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    args = SimpleNamespace(
        max_completion_length=12,
        generation_kwargs={"no_repeat_ngram_size": 3, "best_of": 2},
        temperature=0.7,
        top_p=0.9,
        top_k=20,
        min_p=None,
        repetition_penalty=1.1,
    )
    trainer = SimpleNamespace(args=args, use_vllm=True, eos_token_ids=[2, 5], **vars(args))
    del trainer.generation_kwargs  # as TRL leaves it with vLLM
    with caplog.at_level("WARNING"):
        settings = sampling_settings(trainer, tok)
    assert settings["temperature"] == 0.7 and settings["top_p"] == 0.9 and settings["top_k"] == 20
    assert settings["repetition_penalty"] == 1.1 and "min_p" not in settings
    assert settings["max_new_tokens"] == 12 and settings["do_sample"] is True
    assert settings["eos_token_id"] == [2, 5] and settings["no_repeat_ngram_size"] == 3
    assert "best_of" not in settings and "best_of" in caplog.text
    # Without vLLM: TRL's own settings, as they are.
    trainer.generation_kwargs = {"max_new_tokens": 3, "temperature": 1.0}
    assert sampling_settings(trainer, tok) == {"max_new_tokens": 3, "temperature": 1.0}


@has_deepspeed
def test_zero3_init_is_off_inside_zero3_init_disabled_and_back_after():
    from transformers.integrations.deepspeed import (
        HfDeepSpeedConfig,
        is_deepspeed_zero3_enabled,
        unset_hf_deepspeed_config,
    )

    from gan_rl.utils.backends import zero3_init_disabled

    config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    try:
        assert is_deepspeed_zero3_enabled()
        with zero3_init_disabled():
            assert not is_deepspeed_zero3_enabled()
        assert is_deepspeed_zero3_enabled()
    finally:
        unset_hf_deepspeed_config()
    del config


LOCKSTEP_WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch, torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from gan_rl.types import Pair
    from gan_rl.discriminator.encoder import FrozenEncoder
    from gan_rl.discriminator.factory import build_discriminator
    from gan_rl.discriminator.config import DiscriminatorConfig

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
    tok = AutoTokenizer.from_pretrained(sys.argv[1])
    calls = []

    def runner(**inputs):
        calls.append(inputs["input_ids"].shape[0])
        return model(**inputs)

    encoder = FrozenEncoder(tok, model.config.hidden_size, layer=1, generator_format=True)
    encoder.bind(model, runner=lambda: runner, sharded=True)
    config = DiscriminatorConfig(d_model=32, num_layers=1, num_heads=2, encode_batch_size=2, cache_size=64)
    disc = build_discriminator(config, encoder=encoder)
    # Rank 0 has 1 pair to encode, rank 1 has 7: 1 chunk against 4.
    pairs = [Pair(f"topic {i}", f"topic {i}", f"word {i} " * (i + 1)) for i in range(1 if rank == 0 else 7)]
    generated, real = disc.featurize_round(pairs, pairs[:1])
    counts = [None, None]
    dist.all_gather_object(counts, len(calls))
    if rank == 0:
        json.dump({"counts": counts, "features": len(generated)}, open(sys.argv[2], "w"))
    # Both ranks leave together, and skip the interpreter's teardown: about 1 run in 8 aborted there
    # ("terminate called without an active exception", SIGABRT) after the work was done and written.
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)
    """
)


@pytest.mark.slow
def test_two_ranks_with_unequal_work_run_the_same_number_of_encoder_forwards(tmp_path, tiny_model_dir):
    """Lockstep by construction, with 2 real processes: one rank has 1 pair to encode, the other 7; both
    run the same number of encoder forwards (the busiest rank's), so a sharded forward never waits."""
    script = tmp_path / "worker.py"
    script.write_text(LOCKSTEP_WORKER)
    result = tmp_path / "result.json"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        free_port(),
        str(script),
        str(tiny_model_dir),
        str(result),
    ]
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(result.read_text())["counts"]
    assert counts[0] == counts[1] >= 4


@has_deepspeed
@pytest.mark.slow
def test_zero2_two_cpu_processes_with_the_adapter_discriminator(tmp_path, tiny_model_dir):
    """kind adapter under a 2-process launch: the adapter trains on both ranks and stays equal on both
    (the fingerprints cover its weights)."""
    path = zero_recipe(tmp_path, tiny_model_dir, lora=True, beta=0.0)
    recipe = yaml.safe_load(path.read_text())
    disc = recipe["discriminator"]
    for key in ("d_model", "num_layers", "num_heads", "encode_batch_size"):  # head-only fields
        disc.pop(key, None)
    disc.update(kind="adapter", loss="bradley_terry")
    write_recipe(path, recipe)
    proc = launch("deepspeed_zero2_cpu.yaml", path, "ppo", "--samples", "2", cwd=tmp_path)
    summary = check_run(proc, tmp_path / "out", stage=2, steps=2)
    assert summary["disc_rounds"] + summary["disc_skipped_rounds"] >= 2
