"""What ``SpinTrainer`` refuses at construction, before any sampling: each a ValueError (or TypeError)
that says what to pass instead."""

from __future__ import annotations

import pytest
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from gan_rl.trainer.spin import SpinConfig, SpinTrainer

DATA = Dataset.from_list([{"prompt": "a\n", "completion": "b"}])


def args(tmp_path, **kw) -> SpinConfig:
    return SpinConfig(output_dir=str(tmp_path), bf16=False, report_to="none", **kw)


def test_a_dataset_in_another_format_is_refused_naming_the_columns(tmp_path, tiny_model_dir):
    rows = Dataset.from_list([{"topic": "a", "post": "b"}])
    with pytest.raises(ValueError, match=r"'prompt' and 'completion'.*\['topic', 'post'\]"):
        SpinTrainer(str(tiny_model_dir), args=args(tmp_path), train_dataset=rows)
    with pytest.raises(ValueError, match="train_dataset is required"):
        SpinTrainer(str(tiny_model_dir), args=args(tmp_path))


def test_a_peft_model_is_refused_the_base_and_a_peft_config_are_asked_for(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2))
    with pytest.raises(ValueError, match="pass the base model and a peft_config"):
        SpinTrainer(model, args=args(tmp_path), train_dataset=DATA)


def test_args_must_be_a_spin_config_and_a_model_id_is_accepted(tmp_path, tiny_model_dir):
    from trl import DPOConfig

    with pytest.raises(TypeError, match="args must be a SpinConfig, got DPOConfig"):
        SpinTrainer(
            str(tiny_model_dir), args=DPOConfig(output_dir=str(tmp_path), bf16=False), train_dataset=DATA
        )
    trainer = SpinTrainer(str(tiny_model_dir), args=args(tmp_path), train_dataset=DATA)
    # The tokenizer comes from the id; the model is loaded when iteration 1 needs it.
    assert trainer.processing_class.pad_token is not None and trainer.model is None
    assert trainer.conversational is False
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert trainer.processing_class.get_vocab() == tokenizer.get_vocab()
