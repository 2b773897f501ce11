"""``discriminator.kind: adapter``: a second LoRA adapter with a score head on the generator's own base.

The mechanism, deterministically: the adapter trains and the policy does not move, the policy's adapter is
the active and trainable one outside the discriminator's forwards, its weights round-trip through a
checkpoint, and a run resumed from one is the uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, load_model, save_model
from transformers import TrainerCallback

from gan_rl.cli.main import main
from gan_rl.cli.recipe import load_recipe, parse_recipe
from gan_rl.discriminator.adapter import DISCRIMINATOR_ADAPTER, AdapterDiscriminator
from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.discriminator.factory import build_discriminator
from gan_rl.discriminator.trainer import DiscriminatorTrainer
from gan_rl.errors import RecipeError
from gan_rl.types import Pair
from gan_rl.utils.lora import LoraSettings, lora_config

LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
REAL = [Pair(f"topic {t}", f"topic {t}", f"i think {t} is great !") for t in ("rain", "pizza", "cats", "tea")]
FAKE = [Pair(p.prompt, p.prompt_text, "the the the the") for p in REAL]


def policy_model(tiny_model_dir: Path):
    """The tiny generator with the policy's LoRA adapter ("default"), as TRL wraps it."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft = get_peft_model(model, lora_config(LoraSettings(**LORA), "CAUSAL_LM"))
    return peft, AutoTokenizer.from_pretrained(tiny_model_dir)


def bound(tiny_model_dir: Path, **config) -> tuple[AdapterDiscriminator, object, DiscriminatorTrainer]:
    peft, tokenizer = policy_model(tiny_model_dir)
    cfg = DiscriminatorConfig(kind="adapter", max_length=32, batch_size=8, learning_rate=1e-2, **config)
    disc = build_discriminator(cfg, tokenizer=tokenizer, hidden_size=peft.config.hidden_size)
    trainer = DiscriminatorTrainer(disc, cfg)
    disc.bind(peft)
    trainer.rebuild()
    return disc, peft, trainer


def named(peft, adapter: str) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in peft.named_parameters() if f".{adapter}." in n}


def test_the_adapter_trains_and_the_policy_stays_active_and_unchanged(tiny_model_dir):
    disc, peft, trainer = bound(tiny_model_dir)
    # Outside the discriminator's forwards the policy's adapter is the active, trainable one.
    assert peft.active_adapter == "default"
    flags = {n: p.requires_grad for n, p in peft.named_parameters()}
    assert all(v for n, v in flags.items() if ".default." in n)
    assert not any(v for n, v in flags.items() if f".{DISCRIMINATOR_ADAPTER}." in n or "lora_" not in n)
    policy, adapter = named(peft, "default"), named(peft, DISCRIMINATOR_ADAPTER)
    base = {n: p.detach().clone() for n, p in peft.named_parameters() if "lora_" not in n}
    ids = torch.tensor([[1, 2, 3, 4]])
    logits_before = peft(input_ids=ids).logits

    real, fake = disc.featurize(REAL), disc.featurize(FAKE)
    losses = [trainer.update(real, fake)[0] for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]  # it learns to tell the two apart (a fixed batch)
    scores = disc.score(real + fake)
    assert (scores[:4] > scores[4:].max()).all()

    changed = named(peft, DISCRIMINATOR_ADAPTER)
    assert any(not torch.equal(adapter[n], changed[n]) for n in adapter)  # the adapter trained
    assert all(torch.equal(policy[n], p) for n, p in named(peft, "default").items())  # the policy did not
    assert all(torch.equal(base[n], p) for n, p in peft.named_parameters() if "lora_" not in n)
    assert peft.active_adapter == "default"
    assert torch.equal(peft(input_ids=ids).logits, logits_before)  # the policy's output, bit for bit
    assert all(p.requires_grad == flags[n] for n, p in peft.named_parameters())


def test_its_weights_round_trip_through_a_checkpoint(tiny_model_dir, tmp_path):
    disc, _, trainer = bound(tiny_model_dir)
    real, fake = disc.featurize(REAL), disc.featurize(FAKE)
    for _ in range(5):
        trainer.update(real, fake)
    assert any(k.startswith("adapter.") for k in disc.state_dict())
    save_model(disc, str(tmp_path / "d.safetensors"))
    fresh, _, _ = bound(tiny_model_dir)
    assert not torch.equal(fresh.score(real + fake), disc.score(real + fake))
    missing, unexpected = load_model(fresh, str(tmp_path / "d.safetensors"), strict=False)
    assert not missing and not unexpected
    assert torch.equal(fresh.score(real + fake), disc.score(real + fake))


def test_recipe_errors_name_the_field(tiny_model_dir):
    base = {
        "model": {"name_or_path": str(tiny_model_dir)},
        "data": {"train": {"synthetic": "quickstart"}},
        "discriminator": {"kind": "adapter"},
    }
    with pytest.raises(RecipeError, match="discriminator.kind: 'adapter' adds a LoRA adapter.*model.lora"):
        parse_recipe(base)
    parse_recipe({**base, "model": {**base["model"], "lora": LORA}})
    for field, value in (("d_model", 64), ("encoder_layer", 2)):
        with pytest.raises(RecipeError, match=f"discriminator.{field}: only kind 'head' reads it"):
            parse_recipe(
                {
                    **base,
                    "model": {**base["model"], "lora": LORA},
                    "discriminator": {"kind": "adapter", field: value},
                }
            )
    with pytest.raises(RecipeError, match="discriminator.gguf_file: kind 'adapter'"):
        parse_recipe({**base, "discriminator": {"kind": "adapter", "gguf_file": "x.gguf"}})


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


ADAPTER_RUN = {
    "model": {"lora": LORA},
    "discriminator": {"kind": "adapter", "learning_rate": 1e-3, "max_length": 40, "loss": "bradley_terry"},
}


def test_ppo_with_the_adapter_resumes_bit_identically(tmp_path, recipe_factory):
    """A run with checkpoints, and the same run resumed from its first: the policy's adapter and the
    discriminator (head and adapter) are the same bits."""
    trainer = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2}
    path = recipe_factory(trainer=trainer, **ADAPTER_RUN)
    seen: list[tuple[int, int]] = []

    class OptimizerCheck(TrainerCallback):
        """TRL's optimizer holds the policy's adapter and none of the discriminator's."""

        def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            held = {id(p) for group in optimizer.param_groups for p in group["params"]}
            named = dict(model.named_parameters())
            policy = {id(p) for n, p in named.items() if ".default." in n}
            adapter = {id(p) for n, p in named.items() if f".{DISCRIMINATOR_ADAPTER}." in n}
            seen.append((len(held & policy), len(held & adapter)))
            assert held == policy and adapter and not held & adapter

    from gan_rl.cli.train import run as train

    train("ppo", load_recipe(path), num_samples=0, progress=False, callbacks=[OptimizerCheck()])
    assert len(seen) == 4
    out = tmp_path / "out"
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["disc_rounds"] + summary["disc_skipped_rounds"] == 5  # the warm-up, then every step
    saved = load_file(str(out / "discriminator" / "model.safetensors"))
    assert any(k.startswith("adapter.") for k in saved) and "score_head.weight" in saved
    run(
        "ppo",
        str(path),
        "--samples",
        "0",
        "--resume",
        str(out / "checkpoint-2"),
        "--output-dir",
        str(tmp_path / "r"),
    )
    for name in ("discriminator/model.safetensors", "adapter_model.safetensors"):
        a, b = load_file(str(out / name)), load_file(str(tmp_path / "r" / name))
        assert a.keys() == b.keys()
        diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        assert diff == 0.0, f"{name}: resumed run differs by up to {diff:g}"
    # The saved policy is the policy's adapter (the discriminator's lives in the discriminator's folder).
    policy = load_file(str(out / "adapter_model.safetensors"))
    assert not any(DISCRIMINATOR_ADAPTER in k for k in policy)
