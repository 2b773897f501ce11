"""Padding: a pad token for tokenizers that lack one, and right-padding token ids into a batch.

Every tokenizer gan-rl batches with (the generator's, a classifier's, a head's own encoder's, the
evaluation encoder's) needs a pad token, and every hand-built batch the same ids-plus-mask layout; one
definition of each keeps them from drifting apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

PAD_FALLBACKS = ("eos_token", "unk_token")


def ensure_pad_token(tokenizer: Any, fallbacks: Sequence[str] = PAD_FALLBACKS) -> str | None:
    """Give a tokenizer without a pad token the first of ``fallbacks`` (token attributes) it has, and
    return its pad token (None when it has none of them).

    Padded positions are masked out of attention and loss, so the pad token only has to exist; reusing
    the end-of-sequence token is the usual choice (a new token would change the embedding size).
    """
    if tokenizer.pad_token is None:
        token = next((t for t in (getattr(tokenizer, name) for name in fallbacks) if t), None)
        if token is not None:
            tokenizer.pad_token = token
    return tokenizer.pad_token


def right_pad(
    rows: Sequence[Sequence[int] | torch.Tensor], pad_id: int, multiple_of: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), each a ``(len(rows), width)`` long tensor: every row from position 0,
    ``pad_id`` (mask 0) after it; ``width`` is the longest row rounded up to a multiple of ``multiple_of``.

    Right padding keeps every token at the position it has in the row alone (a learned position table
    then reads a row the same batched or not); generation pads left instead
    (:func:`gan_rl.utils.generation.tokenize_prompts`).
    """
    longest = max(len(row) for row in rows)
    width = -(-longest // multiple_of) * multiple_of
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask
