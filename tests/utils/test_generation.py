"""The one sampling loop (:func:`gan_rl.utils.generation.sample_completions`) runs the model inside a
trainer as it runs outside it: with its KV cache, whatever the trainer set in the config, and, under
LoRA, not under the autocast that accelerate wraps around ``forward`` for mixed precision. Mechanisms,
not timings: the same on every machine."""

from __future__ import annotations

from types import MethodType, SimpleNamespace

import torch

from gan_rl.utils.generation import end_token_ids, sample_completions

SETTINGS = {"do_sample": True, "max_new_tokens": 6, "temperature": 1.0}


def _watch(model) -> list[tuple[int, bool]]:
    """(tokens fed, autocast on) for every forward of the decoder's first layer."""
    seen: list[tuple[int, bool]] = []
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model.model.model

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        seen.append((hidden.shape[1], torch.is_autocast_enabled("cpu")))

    decoder.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def _sample(model, tokenizer, prompts, seed=0, **settings):
    torch.manual_seed(seed)
    return sample_completions(model, tokenizer, prompts, 4, {**SETTINGS, **settings})


def test_the_kv_cache_is_used_even_when_the_config_turned_it_off(tiny_model_dir):
    """A Trainer sets ``config.use_cache = False`` (``TrainingArguments.use_cache``) and saves it; a model
    whose generation config is built from that config would recompute the whole sequence at every new
    token. Sampling keeps the cache: the prompt once, then one token per step."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.config.use_cache = False
    model.generation_config.use_cache = False
    seen = _watch(model)
    prompts = ["taxes and the border", "the economy", "schools"]
    _sample(model, tokenizer, prompts, min_new_tokens=6)
    prompt_length = tokenizer(prompts, padding=True, return_tensors="pt")["input_ids"].shape[1]
    assert [n for n, _ in seen] == [prompt_length] + [1] * 5
    seen.clear()
    _sample(model, tokenizer, prompts, min_new_tokens=6, use_cache=False)  # asked for: honoured
    assert [n for n, _ in seen] == [prompt_length + i for i in range(6)]


def test_lora_samples_in_training_as_outside_it(tiny_model_dir):
    """The LoRA model as a bf16 trainer holds it (accelerate's autocast and fp32 outputs around the
    PeftModel's ``forward``, the config's ``use_cache`` off, train mode) samples the texts the same model
    samples outside the trainer, without autocast and with the cache."""
    from accelerate.utils import convert_outputs_to_fp32
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False),
    )
    prompts = ["taxes and the border", "the economy", "schools", "the police", "a new law"]
    outside = _sample(model, tokenizer, prompts)

    plain = model.forward  # as Accelerator.prepare_model wraps it under mixed_precision="bf16"
    model.forward = MethodType(torch.autocast("cpu", dtype=torch.bfloat16)(plain.__func__), model)
    model.forward = MethodType(convert_outputs_to_fp32(model.forward.__func__), model)
    model.config.use_cache = False
    model.train()
    seen = _watch(model)
    inside = _sample(model, tokenizer, prompts)
    assert inside == outside
    assert seen and not any(autocast for _, autocast in seen)
    assert sum(n == 1 for n, _ in seen) == len(seen) - 2  # two batches: each prompt once, then cached
    assert model.training


def test_end_tokens_are_eos_and_pad_whichever_exist():
    assert end_token_ids(SimpleNamespace(eos_token_id=2, pad_token_id=0)) == {0, 2}
    assert end_token_ids(SimpleNamespace(eos_token_id=2, pad_token_id=2)) == {2}
    assert end_token_ids(SimpleNamespace(eos_token_id=None, pad_token_id=5)) == {5}
    assert end_token_ids(SimpleNamespace(eos_token_id=None, pad_token_id=None)) == set()
