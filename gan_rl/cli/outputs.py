"""Output directories: what a finished run leaves, and refusing to mix a new run into an old one."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from accelerate import PartialState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from gan_rl.errors import RecipeError

SUMMARY_FILE = "run_summary.json"  # written last: marks a run as finished
RECIPE_FILE = "recipe.yaml"
INITIAL_MODEL_DIR = "initial-model"
DISCRIMINATOR_FILES = ("state.json", "model.safetensors", "optimizer.pt")
GENERATOR_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

logger = logging.getLogger(__name__)


def is_finished(out: str | Path) -> bool:
    return (Path(out) / SUMMARY_FILE).is_file()


def check_output_dir(out: Path, resume: bool, overwrite: bool, field: str = "trainer.output_dir") -> None:
    """Refuse to mix a new run into a finished or unfinished one unless asked to.

    Every process looks at the directory before the main process deletes anything, so all of them take
    the same decision (and raise the same error), and all meet at the same barriers.
    """
    state = PartialState()
    if out.exists() and not out.is_dir():
        raise RecipeError(f"{field}: {out} is a file, not a directory; choose a directory path.")
    writable_parent = next((p for p in [out, *out.parents] if p.exists()), None)
    if writable_parent is not None and not os.access(writable_parent, os.W_OK | os.X_OK):
        raise RecipeError(
            f"{field}: cannot write to {writable_parent} (permission denied); choose another path."
        )
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


def checkpoint_problems(path: Path, discriminator: bool = True) -> list[str]:
    """What a checkpoint lacks (empty: complete). TRL's part: ``trainer_state.json`` (written last by
    transformers), the generator's weights and the optimizer; ours: ``discriminator/`` whole (it is
    written aside and renamed into place, see :meth:`DiscriminatorCallback.on_save`)."""
    problems = []
    if not (path / "trainer_state.json").is_file():
        problems.append("trainer_state.json")
    if not any((path / name).is_file() for name in GENERATOR_WEIGHTS):
        problems.append("generator weights")
    deepspeed = any(path.glob("global_step*"))  # DeepSpeed keeps its optimizer state there
    if not (path / "optimizer.pt").is_file() and not deepspeed:
        problems.append("optimizer.pt")
    if discriminator:
        folder = path / "discriminator"
        if not all((folder / name).is_file() for name in DISCRIMINATOR_FILES):
            problems.append("discriminator/")
    return problems


def _checkpoints(out: Path) -> list[Path]:
    """``checkpoint-N`` folders, newest first."""
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := pattern.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def resolve_resume(
    out: Path, resume: str | bool | None, discriminator: bool = True, fresh_discriminator: bool = False
) -> str | None:
    """``--resume`` (the latest *complete* checkpoint in the output directory) or ``--resume PATH``.

    A checkpoint counts only when complete (:func:`checkpoint_problems`): a kill while one was written
    leaves it partial, and the run goes on from the one before, saying so. ``discriminator``: whether the
    run needs one (``ppo``/``reinforce``; not ``sft``). A checkpoint with everything but its discriminator
    is an error unless ``fresh_discriminator`` (then a new discriminator is warmed up from it).
    """
    if not resume:
        return None
    if resume is True or resume == "latest":
        candidates = _checkpoints(out) if out.is_dir() else []
        if not candidates:
            raise RecipeError(f"--resume: no checkpoint-* directory in {out} to resume from.")
        needs = discriminator and not fresh_discriminator
        lacking: list[tuple[str, list[str]]] = []  # (name, what it lacks) of each later, incomplete one
        for path in candidates:
            problems = checkpoint_problems(path, needs)
            if not problems:
                if lacking:
                    logger.warning("Resuming from %s: later checkpoints are incomplete (%s).", path.name,
                                   _describe(lacking))  # fmt: skip
                else:
                    logger.info("Resuming from %s.", path.name)
                return str(path)
            lacking.append((path.name, problems))
        hint = _fresh_hint([problems for _, problems in lacking])
        raise RecipeError(f"--resume: no complete checkpoint in {out} ({_describe(lacking)}){hint}.")
    path = Path(str(resume))
    if not (path / "trainer_state.json").is_file():
        raise RecipeError(f"--resume: {path} is not a trainer checkpoint (no trainer_state.json).")
    problems = checkpoint_problems(path, discriminator and not fresh_discriminator)
    if problems:
        raise RecipeError(
            f"--resume: {path} is incomplete (lacks {', '.join(problems)}){_fresh_hint([problems])}."
        )
    return str(path)


def _describe(lacking: list[tuple[str, list[str]]]) -> str:
    return "; ".join(f"{name} lacks {', '.join(problems)}" for name, problems in lacking)


def _fresh_hint(problem_lists: list[list[str]]) -> str:
    """Point at --fresh-discriminator when a checkpoint lacks only its discriminator."""
    if any(p == ["discriminator/"] for p in problem_lists):
        return "; pass --fresh-discriminator to continue with a new discriminator"
    return ""
