"""The ``classifier`` discriminator: a sequence-classification model of its own, with its own tokenizer."""

from __future__ import annotations

import torch

from gan_rl.discriminator.base import Discriminator
from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.types import Pair
from gan_rl.utils.backends import zero3_init_disabled
from gan_rl.utils.lora import lora_config
from gan_rl.utils.padding import ensure_pad_token, right_pad


class ClassifierDiscriminator(Discriminator):
    """A separate sequence-classification model (num_labels=1) with its own tokenizer, optionally LoRA."""

    def __init__(
        self, config: DiscriminatorConfig, checkpoint: str, dtype: torch.dtype = torch.float32
    ) -> None:
        # float32 by default: it is trained with AdamW from a fresh score head, and bf16 weights would
        # round most updates away.
        super().__init__(config)
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from gan_rl.utils.modeling import gguf_load_kwargs

        gguf = {"gguf_file": config.gguf_file} if config.gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(
            checkpoint, trust_remote_code=config.trust_remote_code, **gguf
        )
        ensure_pad_token(self.tokenizer)
        self.tokenizer.padding_side = "right"
        # Whole on every rank, also under ZeRO-3: the discriminator is trained by DiscriminatorTrainer
        # (gradients all-reduced), not by DeepSpeed, so its weights must not be partitioned by zero.Init.
        with zero3_init_disabled():
            model = AutoModelForSequenceClassification.from_pretrained(
                checkpoint,
                num_labels=1,
                dtype=dtype,
                trust_remote_code=config.trust_remote_code,
                **gguf_load_kwargs(config.gguf_file),
            )
        model.config.pad_token_id = self.tokenizer.pad_token_id
        if config.lora is not None:
            from peft import get_peft_model

            model = get_peft_model(model, lora_config(config.lora, "SEQ_CLS"))
        self.model = model

    def _featurize(self, pairs: list[Pair]) -> list[torch.Tensor]:
        prompts = [p.prompt_text for p in pairs] if self.config.conditional else None
        end = self.tokenizer.eos_token if self.config.mark_end else None
        responses = [p.response + end if end and p.ended else p.response for p in pairs]
        enc = self.tokenizer(
            prompts if prompts is not None else responses,
            responses if prompts is not None else None,
            truncation=True,  # longest_first: a long response cannot push the pair past max_length
            max_length=self.config.max_length,
        )
        return [torch.tensor(ids, dtype=torch.long) for ids in enc["input_ids"]]

    def response_frame(self, pair: Pair) -> tuple[list[int], list[int]]:
        """The token ids this discriminator's input holds before and after the response of ``pair``: the
        tokenizer's special tokens and, when conditional, the prompt, as :meth:`_featurize` lays them out
        (found by encoding a one-word probe response and reading which tokens belong to it). For a reader
        that brings the response as embeddings: ``gan-rl gumbel``'s relaxed tokens."""
        probe = "x"
        if self.config.conditional:
            enc, part = self.tokenizer(pair.prompt_text, probe), 1
        else:
            enc, part = self.tokenizer(probe), 0
        ids = list(enc["input_ids"])
        inside = [i for i, s in enumerate(enc.sequence_ids()) if s == part]
        if not inside:  # the probe made no token: all of it is the frame's start
            return ids, []
        return ids[: inside[0]], ids[inside[-1] + 1 :]

    def collate(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        input_ids, attention = right_pad(features, self.tokenizer.pad_token_id)
        device = self.device
        return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**batch).logits[:, 0].float()
