"""The dataset a TRL trainer needs to be rewarded by the discriminator.

TRL hands every dataset column to reward functions as keyword arguments. The discriminator's reward needs
two besides ``prompt`` (what the generator sees: chat messages for chat models, plain text otherwise):
``prompt_text`` (the prompt as written) and ``real_response`` (the real response to it), which it pairs
with each generated one.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from gan_rl.types import PROMPT_TEXT, REAL_RESPONSE, Pair, Prompt


def format_prompt(
    text: str, chat: bool, system_prompt: str | None = None, prompt_template: str = "{prompt}"
) -> Prompt:
    """The generator's input for one prompt: chat messages (TRL's conversational format), or plain text
    through ``prompt_template``; ``system_prompt`` first when given."""
    if chat:
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return [*messages, {"role": "user", "content": text}]
    body = prompt_template.format(prompt=text)
    return f"{system_prompt}\n{body}" if system_prompt else body


def adversarial_dataset(
    dataset: Dataset,
    tokenizer: Any = None,
    *,
    prompt_column: str = "prompt",
    response_column: str = "response",
    system_prompt: str | None = None,
    prompt_template: str = "{prompt}",
    chat: bool | None = None,
) -> Dataset:
    """``dataset`` with the columns TRL's trainers and the discriminator's reward read: ``prompt``,
    ``prompt_text`` and ``real_response``, from its ``prompt_column`` and ``response_column`` (text).

    ``chat``: prompts as chat messages; default: when ``tokenizer`` has a chat template. Train with
    ``remove_unused_columns=False`` (TRL's default for GRPO and RLOO), so the reward receives the columns.
    """
    missing = [c for c in (prompt_column, response_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"adversarial_dataset: no column {', '.join(map(repr, missing))}; the dataset has "
            f"{dataset.column_names}; pass prompt_column= / response_column=."
        )
    if chat is None:
        chat = getattr(tokenizer, "chat_template", None) is not None
    elif chat and tokenizer is not None and getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("adversarial_dataset: chat=True needs a tokenizer with a chat template.")
    rows = [
        {
            "prompt": format_prompt(p, chat, system_prompt, prompt_template),
            PROMPT_TEXT: p,
            REAL_RESPONSE: r,
        }
        for p, r in zip(dataset[prompt_column], dataset[response_column], strict=True)
    ]
    return Dataset.from_list(rows)


def real_pairs(dataset: Dataset) -> list[Pair]:
    """The real (prompt, response) pairs of a dataset made by :func:`adversarial_dataset`."""
    return [Pair(r["prompt"], r[PROMPT_TEXT], r[REAL_RESPONSE]) for r in dataset]
