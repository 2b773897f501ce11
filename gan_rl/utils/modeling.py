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
