"""The SFT loss term for the policy (``sft_loss.coef`` > 0): InstructGPT's pretraining mix.

The negative log-likelihood of a random batch of real (prompt, response) pairs is added to every policy
loss, so the text cannot drift into whatever fools the discriminator while the reward rises. It is a
mixin on TRL's trainer (:meth:`gan_rl.cli.algorithms.Algorithm.trainer_class`): the extra forward pass runs
inside the trainer's own ``compute_loss``, so its gradients join the policy gradient in one backward pass.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from accelerate import PartialState

from gan_rl.trainer.trl_internals import metric_logger, scales_loss_for_accumulation
from gan_rl.types import Pair
from gan_rl.utils.generation import chat_prompt
from gan_rl.utils.padding import right_pad


class RealResponseLoss:
    """The mean token NLL of a random batch of real (prompt, response) pairs under the policy.

    Prompts are encoded exactly as the generator sees them (chat template or plain text); only response
    tokens (and the end-of-sequence token) are scored.
    """

    def __init__(
        self,
        tokenizer: Any,
        pairs: list[Pair],
        coef: float,
        batch_size: int = 8,
        max_length: int = 256,
        seed: int = 0,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not pairs:
            raise ValueError("RealResponseLoss needs at least one real pair.")
        self.tokenizer = tokenizer
        self.pairs = pairs
        self.coef = coef
        self.batch_size = batch_size
        self.max_length = max_length
        self.seed = seed
        self.rng = random.Random(f"sft-loss/{seed}/{PartialState().process_index}")
        self._last_step: int | None = None
        self._calls_this_step = 0
        self.chat_template_kwargs = chat_template_kwargs or {}

    def _encode(self, pair: Pair) -> tuple[list[int], list[int]]:
        """(input ids, labels); over ``max_length``, the prompt loses its start (the response keeps at
        least half of the budget), so every pair has response tokens to score."""
        tok = self.tokenizer
        if isinstance(pair.prompt, list):  # the chat template brings its own special tokens
            prompt_text = chat_prompt(tok, pair.prompt, self.chat_template_kwargs)
            prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
        else:  # as TRL tokenizes plain prompts: with the tokenizer's special tokens (BOS)
            prompt_ids = tok(pair.prompt)["input_ids"]
        response_ids = tok(pair.response, add_special_tokens=False)["input_ids"]
        if tok.eos_token_id is not None:
            response_ids = [*response_ids, tok.eos_token_id]
        response_ids = response_ids[: max(self.max_length - len(prompt_ids), self.max_length // 2)]
        prompt_ids = prompt_ids[max(len(prompt_ids) - (self.max_length - len(response_ids)), 0) :]
        return prompt_ids + response_ids, [-100] * len(prompt_ids) + response_ids

    def batch(self, device: torch.device) -> dict[str, torch.Tensor]:
        """A random batch, right-padded, with prompt and padding positions masked out of the labels."""
        encoded = [self._encode(self.rng.choice(self.pairs)) for _ in range(self.batch_size)]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids, mask = right_pad([ids for ids, _ in encoded], pad)
        labels, _ = right_pad([lab for _, lab in encoded], -100)
        return {
            "input_ids": input_ids.to(device),
            "attention_mask": mask.to(device),
            "labels": labels.to(device),
        }

    def loss(self, model: torch.nn.Module, step: int | None = None) -> torch.Tensor:
        """The term for one micro-batch. With ``step`` (the trainer's global step) the draw is seeded by
        step and call within the step, so a resumed run draws the same real pairs as the uninterrupted one."""
        if step is not None:
            self._calls_this_step = self._calls_this_step + 1 if step == self._last_step else 0
            self._last_step = step
            process = PartialState().process_index
            self.rng.seed(f"sft-loss/{self.seed}/{process}/{step}/{self._calls_this_step}")
        device = next(model.parameters()).device
        return model(**self.batch(device)).loss


def sft_forward_model(model: torch.nn.Module, accelerator: Any) -> torch.nn.Module:
    """The module the SFT term forwards: the model ``compute_loss`` got, as the trainer prepared it.

    A DeepSpeed engine or an FSDP root must be called as it is (its hooks gather the shards and, for
    DeepSpeed, scale the gradients for accumulation as they do the policy loss's). DDP is the exception:
    its reducer expects one forward per backward, so the term runs through the module inside it; its
    gradients flow into the same parameters and are averaged with the policy gradient in the same
    backward pass.
    """
    from torch.nn.parallel import DistributedDataParallel

    return accelerator.unwrap_model(model) if isinstance(model, DistributedDataParallel) else model


class RealResponseLossMixin:
    """Adds ``coef`` x :class:`RealResponseLoss` to a TRL trainer's policy loss while training.

    The extra forward pass runs on every rank in each ``compute_loss`` call (one forward each: under
    ZeRO-3 or FSDP a forward is a collective), through :func:`sft_forward_model`.
    """

    real_response_loss: RealResponseLoss | None = None

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        term = self.real_response_loss
        if term is None or term.coef == 0 or not model.training:
            return loss
        step = getattr(getattr(self, "state", None), "global_step", None)
        sft = term.loss(sft_forward_model(model, self.accelerator), step=step)
        metric_logger(self)("sft/loss", self.accelerator.gather(sft.detach().reshape(1)).mean().item())
        # GRPOTrainer scales its loss for gradient accumulation itself; for
        # RLOOTrainer transformers divides the whole returned loss afterwards. Scale the term alike.
        if scales_loss_for_accumulation(self):
            sft = sft / self.current_gradient_accumulation_steps
        return loss + term.coef * sft
