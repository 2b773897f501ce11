"""What every training command does around its trainer: the same prelude and epilogue.

``gan-rl ppo``/``reinforce`` (:func:`gan_rl.cli.train.run`) and ``gan-rl sft`` (:func:`gan_rl.cli.sft.run_sft`)
both check the output directory and the checkpoint to resume before they read the data, prepare the
generator's tokenizer (and its initial weights) and record the recipe beside the outputs; and both end by
saving the generator and the trainer's state and writing ``run_summary.json`` last, since its presence is
what marks a run as finished (:func:`gan_rl.cli.outputs.is_finished`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import yaml
from accelerate import PartialState
from datasets import Dataset

from gan_rl.cli.data import data_texts, load_raw_splits, uses_chat_format
from gan_rl.cli.models import prepare_tokenizer
from gan_rl.cli.outputs import RECIPE_FILE, SUMMARY_FILE, check_output_dir, is_finished, resolve_resume
from gan_rl.cli.recipe import Recipe
from gan_rl.cli.trl_config import sft_output_dir
from gan_rl.utils.checkpoints import has_checkpoints

logger = logging.getLogger(__name__)


def open_run(
    recipe: Recipe,
    out: Path,
    resume: str | bool | None,
    overwrite: bool,
    *,
    field: str = "trainer.output_dir",
    discriminator: bool = True,
    fresh_discriminator: bool = False,
) -> tuple[str | None, dict[str, Dataset]]:
    """(the checkpoint to resume from, None for a fresh start; the data's splits), after refusing an
    output directory that holds another run (:func:`gan_rl.cli.outputs.check_output_dir`).

    In this order so that the cheapest mistakes (a used directory, a missing checkpoint) are reported
    before the data is read. ``discriminator``: whether a checkpoint needs one to count as complete.

    ``--resume`` of an adversarial run stopped during its SFT warm start (:mod:`gan_rl.cli.preemption`; no
    checkpoint of its own yet) starts it afresh: the warm start resumes the SFT run's checkpoint.
    """
    latest = resume is True or resume == "latest"
    if latest and discriminator and warm_start_pending(recipe, out):
        logger.info("--resume: %s has no checkpoint yet; the SFT warm start resumes first.", out)
        resume = None
    check_output_dir(out, bool(resume), overwrite, field=field)
    resume_path = resolve_resume(
        out, resume, discriminator=discriminator, fresh_discriminator=fresh_discriminator
    )
    return resume_path, load_raw_splits(recipe)


def warm_start_pending(recipe: Recipe, out: Path) -> bool:
    """Whether ``model.warm_start: sft`` still has to (finish to) run, the run in ``out`` not begun."""
    if recipe.model.warm_start != "sft" or is_finished(sft_output_dir(recipe)):
        return False
    return not has_checkpoints(out)


def prepare_run(recipe: Recipe, out: Path, raw: dict[str, Dataset], algorithm: str) -> tuple[Any, bool]:
    """(the generator's tokenizer, whether prompts are chat messages), and ``recipe.yaml`` written.

    The tokenizer comes first because an ``init_config`` or GGUF generator is saved with it into ``out``
    (:func:`gan_rl.cli.models.prepare_tokenizer`); the recipe is written as the run uses it (after a warm
    start, the SFT result as its model) so that a finished directory says how it was made.
    """
    tokenizer = prepare_tokenizer(recipe.model, recipe.resolve_path, out, data_texts(raw, recipe.data))
    chat = uses_chat_format(recipe.data, tokenizer)
    if PartialState().is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / RECIPE_FILE).write_text(
            yaml.safe_dump({"algorithm": algorithm, **recipe.to_dict()}, sort_keys=False)
        )
    return tokenizer, chat


def save_trainer(trainer: Any, out: Path, merge_lora: bool = False) -> None:
    """The generator and ``trainer_state.json`` (the whole log history, readable without tensorboard).

    ``merge_lora``: the adapters merged into the base weights and saved with the tokenizer as an ordinary
    checkpoint (what ``gan-rl sft`` leaves for a warm start, ``generate`` and ``evaluate``); else TRL's
    own save (adapters only, with LoRA).
    """
    if merge_lora:
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        if PartialState().is_main_process:
            unwrapped.merge_and_unload().save_pretrained(str(out))
            trainer.processing_class.save_pretrained(str(out))
    else:
        trainer.save_model(str(out))
    trainer.save_state()


def write_summary(out: Path, summary: Any, log_history: list[dict[str, Any]]) -> None:
    """Training-curve plots, then ``run_summary.json`` (a dataclass with a ``plots`` field), by the main
    process; then every process waits, so none returns before the run is marked finished."""
    state = PartialState()
    if state.is_main_process:
        summary.plots = [str(p) for p in training_curves(log_history, out)]
        (out / SUMMARY_FILE).write_text(json.dumps(dataclasses.asdict(summary), indent=2))
    state.wait_for_everyone()


def training_curves(log_history: list[dict[str, Any]], out: Path) -> list[Path]:
    """``training_curves.png``, when matplotlib is installed (the ``eval`` extra); training needs none of
    the evaluation's packages, so without it the run says so once and writes no plot."""
    if importlib.util.find_spec("matplotlib") is None:
        logger.info("No training_curves.png: matplotlib is not installed (pip install 'gan-rl[eval]').")
        return []
    from gan_rl.eval.plots import plot_training_curves

    return plot_training_curves(log_history, out)
