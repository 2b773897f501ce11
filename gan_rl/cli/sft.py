"""Supervised fine-tuning on the real responses: ``gan-rl sft`` and the warm start.

Three uses of the same supervised signal (the negative log-likelihood of real responses); the first two
live here, the third in :mod:`gan_rl.trainer.sft_term`:

* ``gan-rl sft RECIPE`` is the baseline RLGAF compares against: TRL's ``SFTTrainer`` on the recipe's
  prompt -> response data (prompt-completion format, loss on the response only).
* ``model.warm_start: sft`` makes ``ppo``/``reinforce`` start from that result: the adversarial game then
  refines a generator that already writes in the right shape, and the KL penalty anchors it there.
  ``model.warm_start_data`` gives the warm start data of its own (the quickstart: posts of both
  polarities, then an adversarial run on positive ones).
* ``sft_loss.coef`` > 0 adds the NLL of a batch of real pairs to every policy loss (InstructGPT's
  pretraining mix), so the text cannot drift into whatever fools the discriminator while the reward rises.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from datasets import Dataset
from transformers import EarlyStoppingCallback

from gan_rl.cli.backends import check_backend, setup_distributed
from gan_rl.cli.data import check_columns, format_prompt, load_source
from gan_rl.cli.models import generator_checkpoint, load_generator, preflight_checkpoints
from gan_rl.cli.outputs import RECIPE_FILE, SUMMARY_FILE, is_finished
from gan_rl.cli.preemption import Preempted, PreemptionCallback
from gan_rl.cli.recipe import Recipe
from gan_rl.cli.runs import open_run, prepare_run, save_trainer, write_summary
from gan_rl.cli.selection import finish_selection, selection_callback
from gan_rl.cli.trl_config import (
    build_sft_config,
    check_train_rows,
    sft_early_stopping,
    sft_output_dir,
    with_resolved_dtype,
)
from gan_rl.errors import RecipeError
from gan_rl.utils.lora import lora_config
from gan_rl.utils.modeling import free_memory

logger = logging.getLogger(__name__)


@dataclass
class SFTSummary:
    """What a finished ``gan-rl sft`` run reports (also written to ``run_summary.json``)."""

    output_dir: str
    steps: int
    seconds: float
    train_loss_first: float | None
    train_loss_last: float | None
    # The final model's NLL on data.test (what ``gan-rl evaluate`` also reads), when there is a test split.
    eval_loss: float | None = None
    # With a validation split: its NLL at each evaluation ({step: loss}), the best of them and its step
    # (the model saved, with early stopping), and whether early stopping ended the run before max_steps.
    validation_losses: dict[int, float] = field(default_factory=dict)
    best_validation_loss: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    merged_lora: bool = False
    status: str = "completed"
    algorithm: str = "sft"
    plots: list[str] = field(default_factory=list)
    # The generator's dtype (model.dtype as resolved on this machine) and why it was chosen.
    dtype: str | None = None
    dtype_reason: str | None = None
    # Selection by samples (the recipe's ``sample_selection:``): best step and score, the curve, the cost,
    # and ``model``, the selected model as an ordinary checkpoint (gan_rl.cli.selection); None: off.
    sample_selection: dict[str, Any] | None = None


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
    ``ppo``/``reinforce`` (``model.warm_start: sft``), ``generate`` and ``evaluate`` load as it is. A
    stop signal while training ends the run with a checkpoint and :class:`gan_rl.cli.preemption.Preempted`.
    """
    from trl import SFTTrainer

    if recipe.model.quantization is not None and recipe.model.warm_start == "sft":
        raise RecipeError(
            "model.warm_start: 'sft' with 'quantization' is not supported (the merged SFT model would have "
            "to be re-quantized); run 'gan-rl sft' without quantization, or drop the warm start."
        )
    args = build_sft_config(recipe)
    setup_distributed(args, "sft")  # FSDP that accelerate would drop here: an error before loading
    out = Path(args.output_dir)
    resume_path, raw = open_run(recipe, out, resume, overwrite, field="sft.output_dir", discriminator=False)
    check_train_rows("sft", args, len(raw["train"]))  # fewer rows than one batch: no step would run
    checkpoint = generator_checkpoint(recipe.model, recipe.resolve_path, out)
    tokenizer, chat = prepare_run(recipe, out, raw, "sft")
    train_ds, eval_ds, test_ds = sft_splits(raw, recipe, chat)
    early = sft_early_stopping(recipe)
    # Selection by samples on the validation split (None: off), built before the model loads.
    selection = selection_callback(recipe, raw, chat, resume_dir=resume_path)

    # model.dtype: auto -> this machine's (after recipe.yaml, which keeps "auto": a warm start that reuses
    # this run compares recipes, and its own rule gives the same dtype and trainer.bf16 as here).
    recipe, precision = with_resolved_dtype(recipe, args.use_cpu)
    model = load_generator(recipe.model, checkpoint)
    stop = PreemptionCallback()  # SIGTERM / Ctrl-C: a checkpoint after the current step, then Preempted
    own = [stop, *([EarlyStoppingCallback(early.patience, early.threshold)] if early else [])]
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds if args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=lora_config(recipe.model.lora, "CAUSAL_LM"),
        callbacks=[*own, *([selection] if selection else []), *(callbacks or [])],
    )
    check_backend(trainer, "sft")
    if selection is not None:  # samples and saves through the trainer (every process, in step)
        selection.attach(trainer)
    start = time.time()
    with stop.signals():
        trainer.train(resume_from_checkpoint=resume_path)
    stop.raise_if_stopped(trainer)
    seconds = time.time() - start
    eval_loss = None
    if test_ds is not None:  # the final model (the best one, with early stopping) on the test split
        eval_loss = trainer.evaluate(eval_dataset=test_ds, metric_key_prefix="test").get("test_loss")

    merged = recipe.model.lora is not None and recipe.model.quantization is None
    save_trainer(trainer, out, merge_lora=merged)
    summary = sft_summary(
        trainer, out, seconds, eval_loss, early is not None, "validation" in raw, merged, precision
    )
    log_history = trainer.state.log_history
    selected = selection.summary() if selection is not None else None
    # A warm start trains the adversarial run next in this process: give the SFT model's memory back (and
    # make room for the selected model's merge; the callback holds the trainer too).
    del trainer, model, selection
    free_memory()
    if selected is not None:
        summary.sample_selection = finish_selection(
            out, selected, recipe, lambda: load_generator(recipe.model, checkpoint), tokenizer
        )
    write_summary(out, summary, log_history)
    return summary


def sft_splits(raw: dict[str, Any], recipe: Recipe, chat: bool) -> tuple[Any, Any, Any]:
    """The train, evaluation and test datasets of ``gan-rl sft``. Model selection (eval_strategy, early
    stopping) reads the validation split when there is one, never the test split that the final
    ``eval_loss`` and ``gan-rl evaluate`` report."""
    train_ds = sft_dataset(raw["train"], recipe, chat)
    test_ds = sft_dataset(raw["test"], recipe, chat) if "test" in raw else None
    eval_ds = sft_dataset(raw["validation"], recipe, chat) if "validation" in raw else test_ds
    return train_ds, eval_ds, test_ds


def sft_summary(
    trainer: Any,
    out: Path,
    seconds: float,
    eval_loss: float | None,
    early_stopping: bool,
    has_validation: bool,
    merged: bool,
    precision: Any,
) -> SFTSummary:
    """What a finished ``gan-rl sft`` reports, from its trainer's state."""
    state = trainer.state
    # Logged losses (every logging_steps); a run shorter than that has only the final average.
    losses = [h["loss"] for h in state.log_history if "loss" in h] or [
        h["train_loss"] for h in state.log_history if "train_loss" in h
    ]
    # The validation NLL curve: only a validation split's (without one, evaluations read the test split).
    validation = validation_curve(state.log_history) if has_validation else {}
    best_step = state.best_global_step if early_stopping else None
    if validation and best_step is None:  # no early stopping: the best evaluation, for the record
        best_step = min(validation, key=validation.get)
    return SFTSummary(
        output_dir=str(out),
        steps=state.global_step,
        seconds=round(seconds, 1),
        train_loss_first=losses[0] if losses else None,
        train_loss_last=losses[-1] if losses else None,
        eval_loss=eval_loss,
        validation_losses=validation,
        best_validation_loss=validation.get(best_step) if best_step is not None else None,
        best_step=best_step,
        stopped_early=early_stopping and state.global_step < state.max_steps,
        merged_lora=merged,
        **precision.as_dict(),
    )


def validation_curve(log_history: list[dict[str, Any]]) -> dict[int, float]:
    """``{step: validation NLL}`` from the trainer's log history (its ``eval_loss`` entries)."""
    return {int(h["step"]): float(h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h}


def warm_start(recipe: Recipe) -> Recipe:
    """The recipe with its generator replaced by the SFT result (``model.warm_start: sft``).

    Runs ``gan-rl sft`` first when its output directory holds no finished run (resuming its checkpoints
    when there are some); a finished one is reused, so SFT runs once for several adversarial runs. The
    result is the model the SFT run selected by its samples when it ran with ``sample_selection:``
    (:func:`sft_result`), else its final model.
    """
    if recipe.model.warm_start != "sft":
        return recipe
    adversarial = recipe
    recipe = warm_start_recipe(recipe)  # the SFT run's recipe: its own data when model.warm_start_data
    out = Path(sft_output_dir(recipe))
    if is_finished(out):
        check_same_sft_recipe(out, recipe)
        logger.info("model.warm_start: starting from the finished SFT run in %s.", out)
    else:
        from transformers.trainer_utils import get_last_checkpoint

        resume = "latest" if out.is_dir() and get_last_checkpoint(str(out)) is not None else None
        # The adversarial run's checkpoints (discriminator.model / encoder) resolve now, not after SFT,
        # and before anything is logged (bad input is one line); so does the warm start's own data.
        preflight_checkpoints(adversarial, out)
        check_warm_start_data(adversarial)
        logger.info("model.warm_start: running SFT into %s first.", out)
        from gan_rl.trainer.callback import PolicyGuard

        try:
            # A diverged warm start stops naming its step, as gan-rl sft does (not at the next sampling).
            run_sft(recipe, resume=resume, callbacks=[PolicyGuard("sft.learning_rate")])
        except Preempted as stop:  # the adversarial command resumes it: say so
            stop.warm_start = True
            raise
    model = dataclasses.replace(
        adversarial.model,
        name_or_path=str(sft_result(out).resolve()),
        gguf_file=None,
        init_config=None,
        tokenizer=None,
        word_tokenizer_from_data=False,
        warm_start="none",
        warm_start_data=None,
    )
    return dataclasses.replace(adversarial, model=model)


def sft_result(out: Path) -> Path:
    """The model a finished SFT run in ``out`` hands on: the one it selected by samples (its run summary's
    ``sample_selection.model``, an ordinary checkpoint: under LoRA the merged one) when it selected one,
    else its final model in ``out`` itself. A recipe that asks for selection by samples asks for the
    checkpoint whose samples were closest to the data; the last one can be far past it (docs/benchmarks.md)."""
    try:
        summary = json.loads((out / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return out
    selection = summary.get("sample_selection") if isinstance(summary, dict) else None
    if not isinstance(selection, dict) or not isinstance(selection.get("model"), str):
        return out
    selected = out / Path(selection["model"]).name  # the summary's path is relative to where that run started
    if not (selected / "config.json").is_file():
        logger.warning(
            "model.warm_start: %s names the model selected by samples in %s, which is not there; starting "
            "from the SFT run's final model.", SUMMARY_FILE, selected,
        )  # fmt: skip
        return out
    logger.info(
        "model.warm_start: the SFT run's model selected by samples (step %s): %s.",
        selection.get("best_step"),
        selected,
    )
    return selected


def warm_start_recipe(recipe: Recipe) -> Recipe:
    """The recipe the warm start's SFT runs: ``recipe`` itself, or with ``model.warm_start_data`` as its
    training source.

    Only ``data.train`` is replaced: the columns, the prompt format, ``data.test`` and a validation split
    stay the recipe's, so the warm start writes in the shape the adversarial run reads. Its
    ``recipe.yaml`` then names the data it trained on, which is what :func:`check_same_sft_recipe`
    compares before reusing it.
    """
    source = recipe.model.warm_start_data
    if source is None:
        return recipe
    return dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, train=source))


def check_warm_start_data(recipe: Recipe) -> None:
    """``model.warm_start_data`` can be read and has the recipe's columns: a :class:`RecipeError` naming
    that field, before SFT starts (loaded as ``data.train``, a problem would be named after that field).
    The loaders cache what they read, so the SFT run's own load costs little more."""
    source = recipe.model.warm_start_data
    if source is None:
        return
    ds = load_source(source, recipe, "model.warm_start_data")
    check_columns(ds, recipe.data, "model.warm_start_data")


def _set_only(value: Any) -> Any:
    """``value`` with every mapping entry whose value is None left out, at every depth."""
    if isinstance(value, dict):
        return {k: _set_only(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_set_only(v) for v in value]
    return value


def check_same_sft_recipe(out: Path, recipe: Recipe) -> None:
    """A finished SFT run is reused only if it was trained from the same model, data and settings."""
    try:
        saved = yaml.safe_load((out / RECIPE_FILE).read_text()) or {}
    except (OSError, yaml.YAMLError):
        saved = {}
    current = recipe.to_dict()
    for sections in (saved, current):  # whether the recipe asks for the warm start changes no weights
        if isinstance(sections.get("model"), dict):
            # nor the dtype it trained in (``auto`` resolves per machine; the weights are what they are);
            # the warm start's own data is compared where it went, as the data section's train source
            sections["model"] = {
                k: v
                for k, v in sections["model"].items()
                if k not in ("warm_start", "warm_start_data", "dtype")
            }
    # A field left at None is no setting: a recipe saved before a field existed (data sources' sha256)
    # compares equal to today's with that field unset.
    changed = [
        name for name in ("model", "data", "sft") if _set_only(saved.get(name)) != _set_only(current[name])
    ]
    if changed:
        raise RecipeError(
            f"model.warm_start: the finished SFT run in {out} was trained with other "
            f"{', '.join(changed)} settings than this recipe's; delete it, or point sft.output_dir elsewhere."
        )
