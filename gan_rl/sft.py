"""Supervised fine-tuning on the real responses: ``gan-rl sft``, the warm start, and the SFT loss term.

Three uses of the same supervised signal (the negative log-likelihood of real responses):

* ``gan-rl sft RECIPE`` is the baseline RLGAF compares against: TRL's ``SFTTrainer`` on the recipe's
  prompt -> response data (prompt-completion format, loss on the response only).
* ``model.warm_start: sft`` makes ``ppo``/``reinforce`` start from that result: the adversarial game then
  refines a generator that already writes in the right shape, and the KL penalty anchors it there.
* ``sft_loss.coef`` > 0 adds the NLL of a batch of real pairs to every policy loss (InstructGPT's
  pretraining mix), so the text cannot drift into whatever fools the discriminator while the reward rises.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import PartialState
from datasets import Dataset

from gan_rl.data import Pair, data_texts, format_prompt, load_raw_splits, uses_chat_format
from gan_rl.models import (
    generator_checkpoint,
    load_generator,
    lora_config,
    preflight_checkpoints,
    prepare_tokenizer,
)
from gan_rl.outputs import RECIPE_FILE, SUMMARY_FILE, check_output_dir, is_finished, resolve_resume
from gan_rl.recipe import Recipe, RecipeError, build_sft_config, sft_output_dir

logger = logging.getLogger(__name__)


@dataclass
class SFTSummary:
    """What a finished ``gan-rl sft`` run reports (also written to ``run_summary.json``)."""

    output_dir: str
    steps: int
    seconds: float
    train_loss_first: float | None
    train_loss_last: float | None
    eval_loss: float | None = None
    merged_lora: bool = False
    status: str = "completed"
    algorithm: str = "sft"
    plots: list[str] = field(default_factory=list)


def sft_dataset(ds: Dataset, recipe: Recipe, chat: bool) -> Dataset:
    """TRL's prompt-completion format (loss on the completion only): chat messages or plain text."""
    data = recipe.data
    rows = []
    for prompt, response in zip(ds[data.prompt_column], ds[data.response_column], strict=True):
        formatted = format_prompt(prompt, data, chat)
        completion = [{"role": "assistant", "content": response}] if chat else response
        rows.append({"prompt": formatted, "completion": completion})
    return Dataset.from_list(rows)


def run_sft(
    recipe: Recipe,
    resume: str | bool | None = None,
    overwrite: bool = False,
    callbacks: list[Any] | None = None,
) -> SFTSummary:
    """Fine-tune the recipe's generator on its real responses with TRL's SFTTrainer.

    With LoRA the adapters are merged into the saved model, so the result is an ordinary checkpoint that
    ``ppo``/``reinforce`` (``model.warm_start: sft``), ``generate`` and ``evaluate`` load as it is.
    """
    from trl import SFTTrainer

    from gan_rl.plots import plot_training_curves

    if recipe.model.quantization is not None and recipe.model.warm_start == "sft":
        raise RecipeError(
            "model.warm_start: 'sft' with 'quantization' is not supported (the merged SFT model would have "
            "to be re-quantized); run 'gan-rl sft' without quantization, or drop the warm start."
        )
    args = build_sft_config(recipe)
    out = Path(args.output_dir)
    check_output_dir(out, bool(resume), overwrite, field="sft.output_dir")
    resume_path = resolve_resume(out, resume, discriminator=False)
    raw = load_raw_splits(recipe)
    checkpoint = generator_checkpoint(recipe.model, recipe.resolve_path, out)
    state = PartialState()
    tokenizer = prepare_tokenizer(recipe.model, recipe.resolve_path, out, data_texts(raw, recipe.data))
    chat = uses_chat_format(recipe.data, tokenizer)
    train_ds = sft_dataset(raw["train"], recipe, chat)
    eval_ds = sft_dataset(raw["test"], recipe, chat) if "test" in raw else None
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / RECIPE_FILE).write_text(
            yaml.safe_dump({"algorithm": "sft", **recipe.to_dict()}, sort_keys=False)
        )

    model = load_generator(recipe.model, checkpoint)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds if args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=lora_config(recipe.model),
        callbacks=callbacks,
    )
    start = time.time()
    trainer.train(resume_from_checkpoint=resume_path)
    seconds = time.time() - start
    eval_loss = None
    if eval_ds is not None:
        eval_loss = trainer.evaluate(eval_dataset=eval_ds).get("eval_loss")

    merged = recipe.model.lora is not None and recipe.model.quantization is None
    if merged:
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        if state.is_main_process:
            unwrapped.merge_and_unload().save_pretrained(str(out))
            tokenizer.save_pretrained(str(out))
    else:
        trainer.save_model(str(out))
    trainer.save_state()
    # Logged losses (every logging_steps); a run shorter than that has only the final average.
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h] or [
        h["train_loss"] for h in trainer.state.log_history if "train_loss" in h
    ]
    summary = SFTSummary(
        output_dir=str(out),
        steps=trainer.state.global_step,
        seconds=round(seconds, 1),
        train_loss_first=losses[0] if losses else None,
        train_loss_last=losses[-1] if losses else None,
        eval_loss=eval_loss,
        merged_lora=merged,
    )
    if state.is_main_process:
        summary.plots = [str(p) for p in plot_training_curves(trainer.state.log_history, out)]
        (out / SUMMARY_FILE).write_text(json.dumps(dataclasses.asdict(summary), indent=2))
    state.wait_for_everyone()
    # A warm start trains the adversarial run next in this process: give the SFT model's memory back.
    del trainer, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return summary


def warm_start(recipe: Recipe) -> Recipe:
    """The recipe with its generator replaced by the SFT result (``model.warm_start: sft``).

    Runs ``gan-rl sft`` first when its output directory holds no finished run (resuming its checkpoints
    when there are some); a finished one is reused, so SFT runs once for several adversarial runs.
    """
    if recipe.model.warm_start != "sft":
        return recipe
    out = Path(sft_output_dir(recipe))
    if is_finished(out):
        check_same_sft_recipe(out, recipe)
        logger.info("model.warm_start: starting from the finished SFT run in %s.", out)
    else:
        logger.info("model.warm_start: running SFT into %s first.", out)
        from transformers.trainer_utils import get_last_checkpoint

        resume = "latest" if out.is_dir() and get_last_checkpoint(str(out)) is not None else None
        # The adversarial run's checkpoints (discriminator.model / encoder) resolve now, not after SFT.
        preflight_checkpoints(recipe, out)
        run_sft(recipe, resume=resume)
    model = dataclasses.replace(
        recipe.model,
        name_or_path=str(out.resolve()),
        gguf_file=None,
        init_config=None,
        tokenizer=None,
        word_tokenizer_from_data=False,
        warm_start="none",
    )
    return dataclasses.replace(recipe, model=model)


def check_same_sft_recipe(out: Path, recipe: Recipe) -> None:
    """A finished SFT run is reused only if it was trained from the same model, data and settings."""
    try:
        saved = yaml.safe_load((out / RECIPE_FILE).read_text()) or {}
    except (OSError, yaml.YAMLError):
        saved = {}
    current = recipe.to_dict()
    for sections in (saved, current):  # whether the recipe asks for the warm start changes no weights
        if isinstance(sections.get("model"), dict):
            sections["model"] = {k: v for k, v in sections["model"].items() if k != "warm_start"}
    changed = [name for name in ("model", "data", "sft") if saved.get(name) != current[name]]
    if changed:
        raise RecipeError(
            f"model.warm_start: the finished SFT run in {out} was trained with other "
            f"{', '.join(changed)} settings than this recipe's; delete it, or point sft.output_dir elsewhere."
        )


# --------------------------------------------------------------------------------------------------
# The SFT loss term for the policy (InstructGPT's pretraining mix)
# --------------------------------------------------------------------------------------------------


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
        self._step: int | None = None
        self._calls_this_step = 0
        self.chat_template_kwargs = chat_template_kwargs or {}

    def _encode(self, pair: Pair) -> tuple[list[int], list[int]]:
        """(input ids, labels); over ``max_length``, the prompt loses its start (the response keeps at
        least half of the budget), so every pair has response tokens to score."""
        tok = self.tokenizer
        if isinstance(pair.prompt, list):  # the chat template brings its own special tokens
            prompt_text = tok.apply_chat_template(
                pair.prompt, tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs
            )
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
        width = max(len(ids) for ids, _ in encoded)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        labels = torch.full((len(encoded), width), -100, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, (ids, lab) in enumerate(encoded):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(lab)] = torch.tensor(lab)
            mask[i, : len(ids)] = 1
        return {
            "input_ids": input_ids.to(device),
            "attention_mask": mask.to(device),
            "labels": labels.to(device),
        }

    def loss(self, model: torch.nn.Module, step: int | None = None) -> torch.Tensor:
        """The term for one micro-batch. With ``step`` (the trainer's global step) the draw is seeded by
        step and call within the step, so a resumed run draws the same real pairs as the uninterrupted one."""
        if step is not None:
            self._calls_this_step = self._calls_this_step + 1 if step == self._step else 0
            self._step = step
            process = PartialState().process_index
            self.rng.seed(f"sft-loss/{self.seed}/{process}/{step}/{self._calls_this_step}")
        device = next(model.parameters()).device
        return model(**self.batch(device)).loss


class RealResponseLossMixin:
    """Adds ``coef`` x :class:`RealResponseLoss` to a TRL trainer's policy loss while training.

    The extra forward pass runs through the unwrapped model: its gradients flow into the same parameters,
    and under DDP they are averaged with the policy gradient in the same backward pass.
    """

    real_response_loss: RealResponseLoss | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        term = self.real_response_loss
        if term is None or term.coef == 0 or not model.training:
            return loss
        step = getattr(getattr(self, "state", None), "global_step", None)
        sft = term.loss(self.accelerator.unwrap_model(model), step=step)
        self._metrics["train"]["sft/loss"].append(
            self.accelerator.gather(sft.detach().reshape(1)).mean().item()
        )
        # GRPOTrainer scales its loss for gradient accumulation itself (``loss_is_scaled_for_ga``); for
        # RLOOTrainer transformers divides the whole returned loss afterwards. Scale the term alike.
        if getattr(self, "loss_is_scaled_for_ga", False):
            sft = sft / self.current_gradient_accumulation_steps
        return loss + term.coef * sft


def trainer_class(algorithm: str) -> type:
    """TRL's GRPOTrainer (``ppo``) or RLOOTrainer (``reinforce``), able to add the SFT loss term."""
    from trl import GRPOTrainer, RLOOTrainer

    base = GRPOTrainer if algorithm == "ppo" else RLOOTrainer
    return type(f"GanRL{base.__name__}", (RealResponseLossMixin, base), {})
