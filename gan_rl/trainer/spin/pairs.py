"""SPIN's training data: each real response (chosen) against the policy's own samples (rejected).

The train dataset is TRL's prompt-completion format, the one ``SFTTrainer`` (``gan-rl sft``) takes: a
``prompt`` (plain text, or chat messages) and a ``completion`` (the real response: text, or one assistant
message). The pairs are TRL's preference format (``prompt``, ``chosen``, ``rejected``), conversational
when the prompts are chat messages, so ``DPOTrainer`` tokenizes them exactly as it would its own data.

Pairs are written to a JSON Lines file before they are trained on, and every run trains on what it reads
back: an uninterrupted run and a resumed one see the same bytes.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from gan_rl.types import Prompt
from gan_rl.utils.generation import sample_completions

PROMPT, COMPLETION = "prompt", "completion"


@dataclass(frozen=True)
class PreferencePair:
    """One row of an iteration's ``pairs.jsonl``: train row ``row``'s prompt, its real response (chosen)
    and the ``sample``-th own sample for that same prompt (rejected), in the dataset's format."""

    row: int
    sample: int
    prompt: Prompt
    chosen: Any  # str, or [{"role": "assistant", "content": ...}]
    rejected: Any
    # Whether the own sample ended with an end token (False: cut at max_completion_length).
    ended: bool = True
    # spin.rejected_by: discriminator: the explicit discriminator's held-out logit of the rejected sample
    # (positive: "real"), the lowest of its prompt's samples; None otherwise.
    score: float | None = None


def check_prompt_completion(dataset: Dataset) -> bool:
    """Whether ``dataset`` is conversational; a ValueError naming the columns unless it is TRL's
    prompt-completion format (the real response of each row in ``completion``)."""
    missing = [c for c in (PROMPT, COMPLETION) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            "SpinTrainer: train_dataset needs the columns 'prompt' and 'completion' (TRL's "
            "prompt-completion format, as for SFTTrainer: the completion is the real response); it has "
            f"{dataset.column_names}."
        )
    if len(dataset) == 0:
        raise ValueError("SpinTrainer: train_dataset is empty.")
    first = dataset[0]
    if isinstance(first[PROMPT], list) != isinstance(first[COMPLETION], list):
        raise ValueError(
            "SpinTrainer: train_dataset mixes formats: 'prompt' and 'completion' must both be chat messages "
            "(conversational) or both be text."
        )
    return isinstance(first[PROMPT], list)


def iteration_rows(n_rows: int, limit: int | None, seed: int) -> list[int]:
    """The train rows an iteration samples and trains on: all of them, or ``limit`` of them drawn with
    ``seed`` (sorted, so that the pairs file follows the dataset's order)."""
    if limit is None or limit >= n_rows:
        return list(range(n_rows))
    return sorted(random.Random(seed).sample(range(n_rows), limit))


def sample_rejected(
    model: Any,
    tokenizer: Any,
    prompts: list[Prompt],
    samples_per_prompt: int,
    args: Any,
) -> list[tuple[str, bool]]:
    """``samples_per_prompt`` own samples for each prompt, prompt-major (prompt 0's samples first), as
    (text, ended): one batched sampling pass with the settings of ``args`` (a :class:`SpinConfig`).

    Seed the RNG before calling: the samples are then a function of the model, the prompts and the seed.
    """
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    settings = {
        "do_sample": True,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_new_tokens": args.max_completion_length,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return sample_completions(
        model, tokenizer, repeated, args.generation_batch_size, settings, args.chat_template_kwargs
    )


def build_pairs(
    dataset: Dataset, rows: list[int], samples: list[tuple[str, bool]], samples_per_prompt: int
) -> list[PreferencePair]:
    """Row ``rows[i]``'s real response against each of its own samples
    ``samples[i * samples_per_prompt : (i + 1) * samples_per_prompt]`` (the order of :func:`sample_rejected`).

    The rejected side takes the format of the chosen one: one assistant message when the completions are
    conversational, plain text otherwise.
    """
    if len(samples) != len(rows) * samples_per_prompt:
        raise ValueError(
            f"build_pairs: {len(samples)} samples for {len(rows)} rows x {samples_per_prompt} per prompt."
        )
    pairs = []
    for i, row in enumerate(rows):
        example = dataset[row]
        for j in range(samples_per_prompt):
            text, ended = samples[i * samples_per_prompt + j]
            chosen = example[COMPLETION]
            rejected = [{"role": "assistant", "content": text}] if isinstance(chosen, list) else text
            pairs.append(PreferencePair(row, j, example[PROMPT], chosen, rejected, ended))
    return pairs


def write_pairs(path: Path, pairs: list[PreferencePair]) -> None:
    """``pairs.jsonl``: one pair a line, written aside and renamed (a complete file or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        for pair in pairs:
            f.write(json.dumps(asdict(pair), ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_pairs(path: Path) -> list[PreferencePair]:
    """The pairs :func:`write_pairs` wrote."""
    with path.open() as f:
        return [PreferencePair(**json.loads(line)) for line in f if line.strip()]


def preference_dataset(
    pairs: list[PreferencePair], chat_template_kwargs: dict[str, Any] | None = None
) -> Dataset:
    """TRL's preference format (``prompt``, ``chosen``, ``rejected``) for ``DPOTrainer``; with
    ``chat_template_kwargs``, the per-example column TRL's DPO tokenization reads them from (the pairs are
    then tokenized with the template settings they were sampled with)."""
    extra = {"chat_template_kwargs": dict(chat_template_kwargs)} if chat_template_kwargs else {}
    return Dataset.from_list(
        [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, **extra} for p in pairs]
    )
