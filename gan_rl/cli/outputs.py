"""Output directories: what a finished run leaves, refusing to mix a new run into an old one, and checking
that a checkpoint's files can be read before a run resumes from it."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path

from accelerate import PartialState
from transformers.trainer_utils import get_last_checkpoint

from gan_rl.errors import RecipeError
from gan_rl.utils.checkpoints import (
    BUFFER_GLOB,
    DISCRIMINATOR_DIR,
    DISCRIMINATOR_FILES,
    GENERATOR_WEIGHTS,
    OPTIMIZER,
    RNG_STATE_GLOB,
    TRAINER_STATE,
    TRAINER_STATE_FILES,
    checkpoint_step,
)
from gan_rl.utils.files import unreadable, weight_files

SUMMARY_FILE = "run_summary.json"  # written last: marks a run as finished
RECIPE_FILE = "recipe.yaml"
INITIAL_MODEL_DIR = "initial-model"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")

logger = logging.getLogger(__name__)


def is_finished(out: str | Path) -> bool:
    return (Path(out) / SUMMARY_FILE).is_file()


def check_writable_dir(out: Path, field: str) -> None:
    """``out`` can be made a directory and written to: it is not a file, no parent of it is a file (the
    system then says "not a directory", or "permission denied" to an ``os.access`` check), and its first
    existing parent is writable. One :class:`RecipeError` naming ``field`` otherwise."""
    if out.exists() and not out.is_dir():
        raise RecipeError(f"{field}: {out} is a file, not a directory; choose a directory path.")
    _check_writable_parent(out, [out, *out.parents], field, "be a directory")


def check_writable_file(path: Path, field: str) -> None:
    """``path`` can be written as a file: it is not a directory, no parent of it is a file, and its first
    existing parent is writable. One :class:`RecipeError` naming ``field`` otherwise."""
    if path.is_dir():
        raise RecipeError(
            f"{field}: {path} is a directory; give a file path (e.g. {path / 'generations.jsonl'})."
        )
    _check_writable_parent(path, list(path.parents), field, "be written")


def _check_writable_parent(path: Path, candidates: list[Path], field: str, what: str) -> None:
    """The first existing of ``candidates`` (``path`` and/or its parents) is a writable directory."""
    existing = next((p for p in candidates if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise RecipeError(
            f"{field}: {existing} is a file, so {path} cannot {what} under it; "
            "choose a path whose parents are directories."
        )
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise RecipeError(f"{field}: cannot write to {existing} (permission denied); choose another path.")


def check_output_dir(out: Path, resume: bool, overwrite: bool, field: str = "trainer.output_dir") -> None:
    """Refuse to mix a new run into a finished or unfinished one unless asked to.

    Every process looks at the directory before the main process deletes anything, so all of them take
    the same decision (and raise the same error), and all meet at the same barriers.
    """
    state = PartialState()
    check_writable_dir(out, field)
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
    if not (path / TRAINER_STATE).is_file():
        problems.append(TRAINER_STATE)
    if not any((path / name).is_file() for name in GENERATOR_WEIGHTS):
        problems.append("generator weights")
    deepspeed = any(path.glob("global_step*"))  # DeepSpeed keeps its optimizer state there
    if not (path / OPTIMIZER).is_file() and not deepspeed:
        problems.append(OPTIMIZER)
    if discriminator:
        folder = path / DISCRIMINATOR_DIR
        if not all((folder / name).is_file() for name in DISCRIMINATOR_FILES):
            problems.append("discriminator/")
    return problems


def checkpoint_files(path: Path, discriminator: bool = True) -> list[Path]:
    """The files a resume from checkpoint ``path`` reads: the generator's weights, the trainer's state,
    optimizer, scheduler and RNG states (those present), and with ``discriminator`` the discriminator's
    weights, optimizer, state and sample buffers."""
    files = [path / name for name in TRAINER_STATE_FILES if (path / name).is_file()]
    files += sorted(path.glob(RNG_STATE_GLOB))
    files += weight_files(path)
    folder = path / DISCRIMINATOR_DIR
    if discriminator and folder.is_dir():
        files += [folder / name for name in DISCRIMINATOR_FILES if (folder / name).is_file()]
        files += sorted(folder.glob(BUFFER_GLOB))
    return files


def check_checkpoint_readable(
    path: Path, discriminator: bool = True, fresh_discriminator: bool = False
) -> None:
    """Refuse to resume from ``path`` when a file it would read is truncated or corrupt: one
    :class:`RecipeError` naming the file and what to do, before any model loads (the loaders' own errors
    name neither). With ``fresh_discriminator`` an unreadable discriminator is no error: the run warms up
    a new one (:meth:`gan_rl.trainer.callback.DiscriminatorCallback.on_train_begin` skips it)."""
    for file, problem in unreadable(checkpoint_files(path, discriminator)):
        in_discriminator = file.parent.name == DISCRIMINATOR_DIR
        if in_discriminator and fresh_discriminator:  # not read: the callback warms up a new one
            continue
        earlier = _earlier_checkpoint(path)
        todo = (
            f"resume from an earlier checkpoint (--resume {earlier})"
            if earlier is not None
            else "there is no earlier checkpoint beside it: start the run again (--overwrite, no --resume)"
        )
        if in_discriminator:
            todo += "; or pass --fresh-discriminator to go on from this one with a new discriminator"
        raise RecipeError(f"--resume: {file} {problem}; {todo}.")


def unreadable_file_error(exc: BaseException) -> RecipeError | None:
    """A loader's error for a truncated or corrupt file (safetensors' ``SafetensorError``, torch's
    "PytorchStreamReader failed ...", a pickle or zip file cut short) as one :class:`RecipeError` naming
    the file when the traceback shows it; None for any other error.

    A backstop for what transformers' Trainer reads while it resumes (the generator's weights, the
    optimizer), should a file change after :func:`check_checkpoint_readable` read it.
    """
    from safetensors import SafetensorError

    text = str(exc).strip()
    if not (
        isinstance(exc, (SafetensorError, zipfile.BadZipFile, pickle.UnpicklingError))
        or "PytorchStreamReader" in text
    ):
        return None
    reason = text.splitlines()[0] if text else type(exc).__name__
    file = _file_in_traceback(exc)
    return RecipeError(
        f"--resume: {file or 'a file of the checkpoint'} cannot be read ({reason}); resume from an earlier "
        "checkpoint (--resume CHECKPOINT)."
    )


def _file_in_traceback(exc: BaseException) -> str | None:
    """The innermost weights or optimizer file that a frame of ``exc``'s traceback held in a variable."""
    found = None
    tb = exc.__traceback__
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            named = isinstance(value, (str, os.PathLike)) and str(value).endswith(WEIGHT_SUFFIXES)
            if named and Path(value).is_file():
                found = str(value)
        tb = tb.tb_next
    return found


def _earlier_checkpoint(path: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` beside ``path`` with a smaller N (None: there is none)."""
    step = checkpoint_step(path)
    if step is None or not path.parent.is_dir():
        return None
    for candidate in _checkpoints(path.parent):
        if checkpoint_step(candidate) < step and not checkpoint_problems(candidate, discriminator=False):
            return candidate
    return None


def _checkpoints(out: Path) -> list[Path]:
    """``checkpoint-N`` folders, newest first."""
    found = [(step, p) for p in out.iterdir() if p.is_dir() and (step := checkpoint_step(p)) is not None]
    return [p for _, p in sorted(found, reverse=True)]


def resolve_resume(
    out: Path, resume: str | bool | None, discriminator: bool = True, fresh_discriminator: bool = False
) -> str | None:
    """``--resume`` (the latest *complete* checkpoint in the output directory) or ``--resume PATH``.

    A checkpoint counts only when complete (:func:`checkpoint_problems`): a kill while one was written
    leaves it partial, and the run goes on from the one before, saying so. ``discriminator``: whether the
    run needs one (``ppo``/``reinforce``; not ``sft``). A checkpoint with everything but its discriminator
    is an error unless ``fresh_discriminator`` (then a new discriminator is warmed up from it). A complete
    checkpoint with a file that cannot be read (:func:`check_checkpoint_readable`) is an error naming it.
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
                check_checkpoint_readable(path, discriminator, fresh_discriminator)
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
    check_checkpoint_readable(path, discriminator, fresh_discriminator)
    return str(path)


def _describe(lacking: list[tuple[str, list[str]]]) -> str:
    return "; ".join(f"{name} lacks {', '.join(problems)}" for name, problems in lacking)


def _fresh_hint(problem_lists: list[list[str]]) -> str:
    """Point at --fresh-discriminator when a checkpoint lacks only its discriminator."""
    if any(p == ["discriminator/"] for p in problem_lists):
        return "; pass --fresh-discriminator to continue with a new discriminator"
    return ""
