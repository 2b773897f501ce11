"""Output directories: what a finished run leaves, and refusing to mix a new run into an old one."""

from __future__ import annotations

import shutil
from pathlib import Path

from accelerate import PartialState
from transformers.trainer_utils import get_last_checkpoint

from gan_rl.recipe import RecipeError

SUMMARY_FILE = "run_summary.json"  # written last: marks a run as finished
RECIPE_FILE = "recipe.yaml"
INITIAL_MODEL_DIR = "initial-model"


def is_finished(out: str | Path) -> bool:
    return (Path(out) / SUMMARY_FILE).is_file()


def check_output_dir(out: Path, resume: bool, overwrite: bool, field: str = "trainer.output_dir") -> None:
    """Refuse to mix a new run into a finished or unfinished one unless asked to.

    Every process looks at the directory before the main process deletes anything, so all of them take
    the same decision (and raise the same error), and all meet at the same barriers.
    """
    state = PartialState()
    used = out.exists() and any(out.iterdir())
    finished = (out / SUMMARY_FILE).is_file()
    is_ours = (out / RECIPE_FILE).is_file()
    has_checkpoints = used and get_last_checkpoint(str(out)) is not None
    state.wait_for_everyone()
    if not used:
        return
    if overwrite:
        if not is_ours:
            raise RecipeError(
                f"--overwrite: {out} is not a gan-rl output directory (no {RECIPE_FILE}); not deleting it."
            )
        if state.is_main_process:
            shutil.rmtree(out)
        state.wait_for_everyone()
        return
    if resume:
        if finished:
            raise RecipeError(f"--resume: {out} holds a finished run ({SUMMARY_FILE}); nothing to resume.")
        return
    if finished:
        raise RecipeError(
            f"{field}: {out} already holds a finished run; choose another output_dir or pass --overwrite."
        )
    if has_checkpoints:
        raise RecipeError(
            f"{field}: {out} holds checkpoints of an unfinished run; pass --resume to continue it "
            "or --overwrite to start again."
        )


def resolve_resume(out: Path, resume: str | bool | None) -> str | None:
    """``--resume`` (latest checkpoint in the output directory) or ``--resume PATH``."""
    if not resume:
        return None
    if resume is True or resume == "latest":
        last = get_last_checkpoint(str(out)) if out.is_dir() else None
        if last is None:
            raise RecipeError(f"--resume: no checkpoint-* directory in {out} to resume from.")
        return last
    path = Path(str(resume))
    if not (path / "trainer_state.json").is_file():
        raise RecipeError(f"--resume: {path} is not a trainer checkpoint (no trainer_state.json).")
    return str(path)
