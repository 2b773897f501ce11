"""Selection by samples in the training commands: the recipe's ``sample_selection:`` section wired into
``sft``, ``ppo``, ``reinforce``, ``gumbel`` and ``spin`` the same way, so that every arm of a comparison
is selected alike.

The mechanism is :class:`gan_rl.eval.sample_selection.SampleSelectionCallback`; here is what a command
adds around it:

* the rows: the validation split only (``data.validation`` or ``data.validation_fraction``), never
  ``data.test``, which ``gan-rl evaluate`` reports; prompts formatted as the trainer formats its own;
* the selected model as an ordinary checkpoint: the callback keeps the best weights as the trainer saves
  them in ``OUTPUT_DIR/best-by-samples/``, which under LoRA is the adapter alone. After training that
  adapter is merged into the run's starting weights and saved beside it as
  ``OUTPUT_DIR/best-by-samples-merged/`` (model and tokenizer, with ``selection.json``), which
  ``generate``, ``evaluate`` or a later recipe's ``model.name_or_path`` load like any model. The adapter
  folder stays as the callback wrote it, since a resumed run checks it against its checkpoint. Full
  fine-tuning needs no merge: ``best-by-samples/`` is the model. A quantized base is not merged (the
  merged weights would need quantizing again): ``best-by-samples/`` stays the adapter, which ``generate``
  and ``evaluate`` also load. ``run_summary.json``'s ``sample_selection.model`` names the folder to load;
* ``spin``: each iteration is a DPO run of its own whose steps restart at 0, so each gets its own callback
  writing into ``iteration-k/`` (the starting model scored in iteration 1 only: iteration k's start is
  iteration k - 1's end, scored at its last step). The run's selection is the iteration with the lowest
  best score (ties: the earliest), its folder linked into ``OUTPUT_DIR/best-by-samples/`` (hard links:
  no second copy of the weights) and merged as above.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from accelerate import PartialState
from datasets import Dataset

from gan_rl.cli.data import format_prompt
from gan_rl.cli.recipe import Recipe
from gan_rl.errors import RecipeError
from gan_rl.eval.selection_config import SampleSelectionConfig

logger = logging.getLogger(__name__)

SELECTION_DIR = "best-by-samples"  # as gan_rl.eval.sample_selection.SELECTION_DIR (not imported: torch)
SELECTION_FILE = "selection.json"
MERGED_DIR = "best-by-samples-merged"
STAGING_SUFFIX = ".partial"


def selection_config(recipe: Recipe, raw: dict[str, Dataset] | None = None) -> SampleSelectionConfig | None:
    """The recipe's selection settings (None: off), refused in one line when the run could not select:
    scikit-learn (the ``eval`` extra, which scores) missing, or, once the data is read (``raw``), fewer
    validation rows than the two-sample test's folds. The validation split itself is required when the
    recipe is read (:func:`gan_rl.cli.recipe.parse_recipe`)."""
    config = recipe.sample_selection
    if config is None:
        return None
    if importlib.util.find_spec("sklearn") is None:
        raise RecipeError(
            "sample_selection: scores samples with scikit-learn, which is not installed: "
            "pip install 'gan-rl[eval]' (or drop the section)."
        )
    if raw is not None:
        rows = len(raw["validation"])
        if rows < config.folds:
            raise RecipeError(
                f"sample_selection.folds: {config.folds} folds of the two-sample test need at least as many "
                f"validation rows, and the validation split has {rows}; lower folds or give more rows."
            )
    return config


def selection_callback(
    recipe: Recipe,
    raw: dict[str, Dataset],
    chat: bool,
    *,
    at_start: bool | None = None,
    resume_dir: str | None = None,
) -> Any:
    """A :class:`SampleSelectionCallback` on the validation split (None when the recipe does not select).

    Prompts are shaped as every trainer shapes its own (system prompt, template or chat messages); the
    chat template's extra arguments are taken from the trainer by ``attach`` (what it formats with).
    ``at_start`` overrides the section's (spin: iteration 1 only). ``resume_dir``: the checkpoint a resumed
    run starts from, when it is not the output directory's own ``checkpoint-N``.
    """
    config = selection_config(recipe, raw)
    if config is None:
        return None
    from gan_rl.eval.sample_selection import SampleSelectionCallback

    if at_start is not None and at_start != config.at_start:
        config = replace(config, at_start=at_start)
    data, validation = recipe.data, raw["validation"]
    prompts = [format_prompt(p, data, chat) for p in validation[data.prompt_column]]
    references = list(validation[data.response_column])
    return SampleSelectionCallback(config, prompts, references, resume_dir=resume_dir)


def finish_selection(
    out: Path,
    summary: dict[str, Any] | None,
    recipe: Recipe,
    load_base: Callable[[], Any],
    tokenizer: Any,
) -> dict[str, Any] | None:
    """The run's selection for ``run_summary.json``: ``summary`` (the callback's, or spin's) with
    ``model``, the folder holding the selected model as an ordinary checkpoint, and ``merged``; under LoRA
    without quantization the adapter in ``out/best-by-samples/`` is merged first (see the module
    docstring). ``load_base``: the run's starting weights, as the run loaded them. Every process calls it;
    the main process merges."""
    if summary is None or summary.get("best_step") is None:
        return summary
    selected = out / SELECTION_DIR
    model, merged = selected, False
    if recipe.model.lora is not None and recipe.model.quantization is None:
        model, merged = out / MERGED_DIR, True
        state = PartialState()
        if state.is_main_process:
            merge_adapter(selected, model, load_base, tokenizer)
        state.wait_for_everyone()
    return {**summary, "model": str(model), "merged": merged}


def merge_adapter(selected: Path, merged: Path, load_base: Callable[[], Any], tokenizer: Any) -> None:
    """``selected`` (a LoRA adapter as the trainer saved it) merged into ``load_base()``, saved with the
    tokenizer and ``selected``'s ``selection.json`` into ``merged``: written aside, then renamed into place,
    so that ``merged`` is whole or absent. A ``selected`` that holds a whole model already is copied."""
    staging = merged.with_name(merged.name + STAGING_SUFFIX)
    if staging.exists():
        shutil.rmtree(staging)
    if (selected / "adapter_config.json").is_file():
        from peft import PeftModel

        # The adapter trained as the policy ("default"; TRL's frozen "ref" copy or the discriminator's
        # adapter, saved in subfolders, are not loaded).
        model = PeftModel.from_pretrained(load_base(), str(selected)).merge_and_unload()
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        del model
    else:
        _link_tree(selected, staging, skip={SELECTION_FILE})
    if (selected / SELECTION_FILE).is_file():
        shutil.copy2(selected / SELECTION_FILE, staging / SELECTION_FILE)
    if merged.exists():
        shutil.rmtree(merged)
    staging.rename(merged)
    logger.info("Selection by samples: the selected model, merged, is in %s.", merged)


def _link_tree(source: Path, target: Path, skip: set[str]) -> None:
    """``source`` copied to ``target`` as hard links (the same files, no second copy of the weights), or
    as copies where the file system links none; the top-level names in ``skip`` left out."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    def ignore(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n in skip] if Path(folder) == source else []

    shutil.copytree(source, target, copy_function=link, ignore=ignore)


def spin_selection(
    out: Path,
    iteration_steps: list[int],
    recipe: Recipe,
    load_base: Callable[[], Any],
    tokenizer: Any,
) -> dict[str, Any] | None:
    """The selection of a SPIN run: the iteration whose selected model scored lowest (ties: the earliest),
    linked into ``out/best-by-samples/`` with a ``selection.json`` for the whole run, then merged under LoRA
    (:func:`finish_selection`). ``iteration_steps``: the optimizer steps of iterations 1, 2, ...; a step of
    the run is the steps of the iterations before plus the step within its own, as in the run's curves.
    Every process calls it; the main process writes."""
    from gan_rl.eval.sample_selection import read_selection
    from gan_rl.trainer.spin.layout import RunLayout

    layout = RunLayout(out)
    found: dict[int, dict[str, Any]] = {}
    for k in range(1, len(iteration_steps) + 1):
        selection = read_selection(layout.iteration_dir(k))
        if selection is not None and selection.get("best_score") is not None:
            found[k] = selection
    if not found:
        return None
    best = min(found, key=lambda k: (found[k]["best_score"], k))
    offsets = {k: sum(iteration_steps[: k - 1]) for k in range(1, len(iteration_steps) + 1)}
    curve: dict[str, float] = {}
    seconds: list[float] = []
    for k, selection in found.items():
        curve.update({str(offsets[k] + int(s)): v for s, v in selection["curve"].items()})
        seconds += [float(v) for v in selection.get("seconds", {}).values()]
    chosen = found[best]
    summary = {
        "metric": chosen.get("metric", "two_sample_acc_ngram"),
        "best_iteration": best,
        "best_step": offsets[best] + int(chosen["best_step"]),
        "iteration_step": int(chosen["best_step"]),
        "best_score": chosen["best_score"],
        "path": str(out / SELECTION_DIR),
        "curve": curve,
        "evaluations": len(curve),
        "samples_per_evaluation": chosen.get("samples_per_evaluation"),
        "seconds_per_evaluation": round(sum(seconds) / len(seconds), 3) if seconds else None,
        "seconds_total": round(sum(seconds), 3),
        "save_seconds_total": round(sum(float(s.get("save_seconds_total") or 0) for s in found.values()), 3),
        "settings": chosen.get("settings"),
        "iterations": {
            str(k): {key: s.get(key) for key in ("best_step", "best_score", "evaluations", "path")}
            for k, s in found.items()
        },
    }
    state = PartialState()
    if state.is_main_process:
        selected = out / SELECTION_DIR
        staging = selected.with_name(selected.name + STAGING_SUFFIX)
        for folder in (staging, selected):
            if folder.exists():
                shutil.rmtree(folder)
        _link_tree(layout.iteration_dir(best) / SELECTION_DIR, staging, skip={SELECTION_FILE})
        (staging / SELECTION_FILE).write_text(json.dumps(summary, indent=2))
        staging.rename(selected)
    state.wait_for_everyone()
    return finish_selection(out, summary, recipe, load_base, tokenizer)


def describe(selection: dict[str, Any]) -> str:
    """The command line's one line about a run's selection: the selected step and score, the cost, and
    where the selected model is."""
    where = (
        f"iteration {selection['best_iteration']} step {selection['iteration_step']} (run step "
        f"{selection['best_step']})"
        if "best_iteration" in selection
        else f"step {selection['best_step']}"
    )
    each = selection.get("seconds_per_evaluation")
    cost = f", {each:.1f} s each" if isinstance(each, (int, float)) else ""
    return (
        f"selection by samples: {where}, two-sample accuracy {selection['best_score']:.3f} "
        f"({selection.get('evaluations')} evaluations{cost}); model: {selection.get('model')}"
    )
