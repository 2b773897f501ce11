"""``SpinConfig``: TRL's DPOConfig plus SPIN's fields, each bad value refused at construction, naming it."""

from __future__ import annotations

import dataclasses

import pytest
from trl import DPOConfig

from gan_rl.errors import ConfigError
from gan_rl.trainer.spin import SpinConfig

OWN_FIELDS = (
    "iterations",
    "samples_per_prompt",
    "snapshot",
    "prompts_per_iteration",
    "max_completion_length",
    "temperature",
    "top_p",
    "top_k",
    "generation_batch_size",
    "chat_template_kwargs",
)


def config(tmp_path, **kw) -> SpinConfig:
    return SpinConfig(output_dir=str(tmp_path), bf16=False, report_to="none", **kw)


def test_spin_config_is_a_dpo_config_with_help_on_every_own_field(tmp_path):
    args = config(tmp_path)
    assert isinstance(args, DPOConfig)
    # TRL's DPO fields are TRL's own, with TRL's defaults (SPIN's logistic loss is DPO's sigmoid).
    assert args.beta == 0.1 and args.loss_type == ["sigmoid"]
    assert args.precompute_ref_log_probs is True
    fields = {f.name: f for f in dataclasses.fields(SpinConfig)}
    for name in OWN_FIELDS:
        assert fields[name].metadata.get("help"), name


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("iterations", 0),
        ("iterations", 1.5),
        ("samples_per_prompt", 0),
        ("rejected_by", "best"),
        ("prompts_per_iteration", 0),
        ("max_completion_length", 0),
        ("temperature", 0.0),
        ("temperature", float("nan")),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", -1),
        ("generation_batch_size", 0),
        ("beta", 0.0),
        ("beta", float("inf")),
        ("loss_type", "not-a-loss"),
        ("loss_type", ["sigmoid", "nope"]),
        ("precompute_ref_log_probs", False),
        ("sync_ref_model", True),
        ("eval_strategy", "steps"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field(tmp_path, name, value):
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, **{name: value})
    assert str(raised.value).startswith(f"SpinConfig.{name}: "), str(raised.value)
    assert raised.value.detail.startswith(f"{name}: ")


def test_ranking_by_discriminator_needs_several_samples_per_prompt(tmp_path):
    with pytest.raises(ConfigError) as raised:
        config(tmp_path, rejected_by="discriminator", samples_per_prompt=1)
    assert str(raised.value).startswith("SpinConfig.samples_per_prompt: "), str(raised.value)
    assert config(tmp_path, rejected_by="discriminator", samples_per_prompt=4).rejected_by == "discriminator"


def test_good_values_pass(tmp_path):
    args = config(
        tmp_path,
        iterations=2,
        samples_per_prompt=3,
        prompts_per_iteration=8,
        snapshot=True,
        temperature=0.7,
        top_p=0.9,
        top_k=20,
        loss_type=["sigmoid", "sft"],
        loss_weights=[1.0, 0.1],
    )
    assert (args.iterations, args.samples_per_prompt, args.loss_type) == (2, 3, ["sigmoid", "sft"])
