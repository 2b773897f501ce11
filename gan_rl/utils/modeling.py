"""Facts about a transformers model and how to load one, needed below the command line (the
discriminator reads them as the generator's loader does).
"""

from __future__ import annotations

from typing import Any

import torch


def gguf_load_kwargs(gguf_file: str | None) -> dict[str, Any]:
    """``from_pretrained`` arguments for a GGUF file: dequantized at load time into a plain dense model
    (trainable and saved as ordinary safetensors); nothing for a regular checkpoint."""
    if not gguf_file:
        return {}
    from transformers import GgufConfig

    return {"gguf_file": gguf_file, "quantization_config": GgufConfig(dequantize=True)}


def learned_position_limit(model: Any) -> int | None:
    """How many positions a model with a learned position table takes (GPT-2's ``wpe``, BERT-like
    ``position_embeddings``); None for rotary or ALiBi models, which have no table to index past."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) and name.rsplit(".", 1)[-1] in (
            "wpe",
            "position_embeddings",
        ):
            return int(module.num_embeddings)
    return None


def config_position_limit(config: dict[str, Any]) -> tuple[int, str] | None:
    """(how many positions a model's config gives it, the key that says so), from a transformers config
    as a mapping (``config.json``, ``init_config``, ``config.to_dict()``; a multimodal one's
    ``text_config``); None when it does not say. Reading it needs no weights, so ``gan-rl check`` can too."""
    for key in ("max_position_embeddings", "n_positions"):
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, key
    text = config.get("text_config")
    return config_position_limit(text) if isinstance(text, dict) else None


def load_model_as_trl(model_id: str, args: Any, kwargs: dict[str, Any]) -> Any:
    """TRL's ``create_model_from_path`` with what TRL 1.16's trainers add to ``model_init_kwargs``:
    ``trust_remote_code`` from ``args`` unless given, and no ``device_map`` when distributed training
    places the model itself. For a model gan-rl loads where TRL would (the owning trainers' model id, SPIN's
    iterates)."""
    from trl.trainer.utils import create_model_from_path

    kwargs = dict(kwargs)
    kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    if args.distributed_state.distributed_type in ("MULTI_GPU", "DEEPSPEED"):
        kwargs["device_map"] = None
    return create_model_from_path(model_id, **kwargs)


def free_memory() -> None:
    """Collect what a finished trainer or model held (and CUDA's cache) before the next model loads: a warm
    start, a SPIN iteration and a selected model's merge each load weights after another model is done."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
