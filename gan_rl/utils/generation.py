"""Sampling from a causal LM the way TRL prompts it: one loop for the warm-up, the run summary and
``gan-rl generate`` / ``evaluate``.
"""

from __future__ import annotations

from typing import Any

import torch


def end_token_ids(tokenizer: Any) -> set[int]:
    """The ids that end a completion: the tokenizer's end-of-sequence and padding tokens (a model that
    pads with a token of its own stops on it too). The one definition of "a completion that ended", which
    sampling, the reward and the relaxed tokens of ``gan-rl gumbel`` share."""
    return {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}


def chat_prompt(
    tokenizer: Any, messages: list[dict[str, str]], chat_template_kwargs: dict[str, Any] | None = None
) -> str:
    """Chat messages as the generator reads them: the tokenizer's chat template with the generation
    prompt, as TRL renders a conversational prompt. The one place gan-rl applies a chat template (sampling,
    the SFT term and the discriminator's pair tokenizer); the text carries the template's own special
    tokens, so it is tokenized without adding more."""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {})
    )


def tokenize_prompts(tokenizer: Any, prompts: list[Any], chat_template_kwargs: dict[str, Any] | None = None):
    """A left-padded batch of prompts for ``generate``, tokenized as TRL does: chat messages through the
    chat template (which brings its own special tokens), plain text with the tokenizer's special tokens."""
    chat = bool(prompts) and isinstance(prompts[0], list)
    texts = [chat_prompt(tokenizer, p, chat_template_kwargs) for p in prompts] if chat else list(prompts)
    return tokenizer(
        texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=not chat
    )


@torch.no_grad()
def sample_completions(
    model: Any,
    tokenizer: Any,
    prompts: list[Any],
    batch_size: int,
    generate_kwargs: dict[str, Any],
    chat_template_kwargs: dict[str, Any] | None = None,
) -> list[tuple[str, bool]]:
    """One sampled completion per prompt (chat messages or plain text, tokenized as TRL does), in batches
    of ``batch_size``: (text without special tokens, whether it ended with an end token, i.e. before
    ``max_new_tokens``).

    The one sampling loop of the warm-up, the run summary and ``gan-rl generate``/``evaluate``. The model
    samples in eval mode (no dropout) and gets its train/eval mode back afterwards, always with its KV
    cache unless ``generate_kwargs`` says ``use_cache=False``: a model whose generation config was built
    from a config.json that a ``Trainer`` saved (``use_cache: false``, its ``TrainingArguments.use_cache``)
    would otherwise recompute the whole sequence for every new token.

    Its cost on a CPU is mostly thread synchronisation (about 78,000 small kernels for 8 prompts x 16 new
    tokens of SmolLM2-135M under LoRA): with more busy threads than cores (torch's default, one per core,
    beside another busy process) OpenMP's spin-waiting made it 6-7x slower, in or out of a trainer; there
    run with ``OMP_NUM_THREADS`` set to the free cores, or ``OMP_WAIT_POLICY=passive``.
    """
    ends = end_token_ids(tokenizer)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    settings = {"use_cache": True, **generate_kwargs}
    out: list[tuple[str, bool]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            inputs = tokenize_prompts(tokenizer, prompts[start : start + batch_size], chat_template_kwargs)
            inputs = inputs.to(device)
            ids = model.generate(**inputs, **settings)
            new = ids[:, inputs["input_ids"].shape[1] :]
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            out.extend(zip(texts, (any(int(t) in ends for t in row) for row in new), strict=True))
    finally:
        model.train(was_training)
    return out
