"""``gan-rl spin RECIPE``: SPIN self-play (arXiv 2401.01335) from a recipe, on
:class:`gan_rl.trainer.spin.SpinTrainer` (TRL's ``DPOTrainer`` once per iteration).

The recipe's ``spin:`` section is the whole :class:`gan_rl.trainer.spin.SpinConfig` (TRL's DPO fields and
SPIN's: ``iterations``, ``samples_per_prompt``, ``snapshot``, ...), with the machine settings of ``trainer``
as ``sft:`` takes them (:func:`gan_rl.cli.trl_config.build_spin_config`). The data is the recipe's train
split in the prompt-completion format of ``gan-rl sft``: each real response is the chosen side, the
policy's own sample for the same prompt the rejected one. ``model.warm_start: sft`` starts from the SFT
result, as SPIN starts from an SFT model.

What the command adds around the trainer, as the other commands do: the output directory (default
``trainer.output_dir`` + ``-spin``) refused when it holds another run, ``--resume`` (the first iteration not
done, from its latest complete checkpoint) and ``--overwrite``, SIGTERM / Ctrl-C (a checkpoint inside an
iteration; between iterations, the iterations done are the resume point), selection by samples per
iteration, the final policy (LoRA merged) with its tokenizer in the output directory, ``run_summary.json``
(one summary per iteration) and ``training_curves.png`` (the DPO curves over the run's steps).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset

from gan_rl.cli.backends import check_backend, setup_distributed
from gan_rl.cli.data import load_raw_splits
from gan_rl.cli.models import check_position_limit, generator_checkpoint, load_generator
from gan_rl.cli.outputs import check_output_dir, resolve_resume
from gan_rl.cli.preemption import Preempted, PreemptionCallback
from gan_rl.cli.recipe import Recipe
from gan_rl.cli.runs import prepare_run, write_summary
from gan_rl.cli.selection import selection_callback, selection_config, spin_selection
from gan_rl.cli.sft import sft_dataset, warm_start
from gan_rl.cli.trl_config import build_spin_config, check_spin_model, check_train_rows, with_resolved_dtype
from gan_rl.errors import RecipeError, TrainingError
from gan_rl.utils.checkpoints import has_checkpoints
from gan_rl.utils.distributed import all_reduce_, world_size
from gan_rl.utils.lora import lora_config
from gan_rl.utils.modeling import free_memory

logger = logging.getLogger(__name__)


@dataclass
class SpinSummary:
    """What a finished ``gan-rl spin`` run reports (also written to ``run_summary.json``)."""

    output_dir: str
    # One per iteration (gan_rl.trainer.spin.layout.IterationSummary): rows, pairs, steps, whether the
    # rejected samples were iteration 1's (snapshot), the last DPO metrics, the time of each phase.
    iterations: list[dict[str, Any]]
    steps: int  # optimizer steps of all iterations
    seconds: float  # this process's wall time in training (iterations a resumed run skipped not counted)
    loss_first: float | None  # the DPO loss at the first and the last logged step of the run
    loss_last: float | None
    snapshot: bool
    merged_lora: bool
    status: str = "completed"
    algorithm: str = "spin"
    plots: list[str] = field(default_factory=list)
    # The generator's dtype (model.dtype as resolved on this machine) and why it was chosen.
    dtype: str | None = None
    dtype_reason: str | None = None
    # Selection by samples (the recipe's ``sample_selection:``): the best iteration and step, its score,
    # the curve over the run's steps, the cost, and ``model``, the selected model as an ordinary checkpoint.
    sample_selection: dict[str, Any] | None = None


def run_spin(
    recipe: Recipe,
    resume: str | bool | None = None,
    overwrite: bool = False,
    callbacks: list[Any] | None = None,
) -> SpinSummary:
    """Play the recipe's SPIN iterations (see the module docstring) and save the final policy.

    ``resume``: ``"latest"``/True continues the run in the output directory, a path resumes from that
    checkpoint (inside the first iteration not done). ``callbacks`` go to every iteration's DPOTrainer. A
    stop signal ends the run with :class:`gan_rl.cli.preemption.Preempted`; a callback that ends an
    iteration early (not a signal) with a :class:`TrainingError`, since that iteration is not done.
    """
    from gan_rl.trainer.spin import SpinTrainer

    check_spin_model(recipe)
    args = build_spin_config(recipe)
    discriminator = spin_discriminator(recipe)  # rejected_by: discriminator, checked before loading
    setup_distributed(args, "spin")  # FSDP that accelerate would drop here: an error before loading
    out = Path(args.output_dir)
    resume_from, raw = open_spin_run(recipe, out, resume, overwrite)
    check_train_rows("spin", args, len(raw["train"]))  # fewer rows than one batch: no step would run
    selection_config(recipe, raw)  # selection by samples that could not run: an error before loading
    recipe = warm_start(recipe)  # model.warm_start: sft -> the generator is the SFT result (run it first)
    checkpoint = generator_checkpoint(recipe.model, recipe.resolve_path, out)
    tokenizer, chat = prepare_run(recipe, out, raw, "spin")
    train_ds = sft_dataset(raw["train"], recipe, chat)

    # model.dtype: auto -> this machine's (after recipe.yaml, as gan-rl sft does).
    recipe, precision = with_resolved_dtype(recipe, args.use_cpu)
    model = load_generator(recipe.model, checkpoint)
    check_position_limit(
        model, tokenizer, train_ds, args.max_completion_length, args.chat_template_kwargs,
        field="spin.max_completion_length",
    )  # fmt: skip
    stop = PreemptionCallback()  # SIGTERM / Ctrl-C: a checkpoint after the current step, then Preempted
    spin = SpinTrainer(
        model,
        args=args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=lora_config(recipe.model.lora, "CAUSAL_LM"),
        callbacks=[stop, *(callbacks or [])],
        discriminator=discriminator,
    )
    # Between iterations (before the next one samples) as well as within one: every process agrees.
    spin.stop_requested = lambda: stop_agreed(stop)
    spin.prepare_iteration = iteration_setup(recipe, raw, chat)
    start = time.time()
    with stop.signals():
        output = spin.train(resume_from_checkpoint=resume_from)
    if output.stopped:
        raise stopped_error(stop, spin, len(output.iterations))
    stop.raise_if_stopped(spin.trainer)  # a signal in the very last step: says so, and the run finishes
    seconds = time.time() - start

    spin.save_model(out)  # the final policy, LoRA merged, with the tokenizer: an ordinary checkpoint
    log_history = spin.log_history
    steps = [s.steps for s in output.iterations]
    # The last iteration's memory back (its trainer, its callbacks and the policy) before a selected model
    # is merged from a fresh copy of the starting weights.
    del spin, model
    free_memory()
    selected = None
    if recipe.sample_selection is not None:
        selected = spin_selection(
            out, steps, recipe, lambda: load_generator(recipe.model, checkpoint), tokenizer
        )
    summary = spin_summary(out, output, seconds, log_history, args.snapshot, recipe, selected, precision)
    write_summary(out, summary, log_history)
    return summary


def spin_discriminator(recipe: Recipe) -> Any:
    """The recipe's ``discriminator:`` when ``spin.rejected_by`` is ``discriminator`` (it picks each
    prompt's rejected sample), its own checkpoints resolved as ``gan-rl ppo`` resolves them; else None.
    Kind ``adapter`` is refused naming the field (it needs the policy TRL wraps, after sampling)."""
    import dataclasses

    from gan_rl.cli.models import discriminator_checkpoints

    if recipe.spin.get("rejected_by") != "discriminator":
        return None
    cfg = recipe.discriminator
    if cfg.kind == "adapter":
        raise RecipeError(
            "discriminator.kind: spin.rejected_by: discriminator ranks the samples before the iteration's "
            "DPO run wraps the policy, which kind 'adapter' trains on; use kind 'head' or 'classifier'."
        )
    encoder, classifier = discriminator_checkpoints(cfg, recipe.resolve_path)
    if encoder is not None:
        return dataclasses.replace(cfg, encoder=encoder)
    if classifier is not None:
        return dataclasses.replace(cfg, model=classifier)
    return cfg


def spin_summary(
    out: Path,
    output: Any,
    seconds: float,
    log_history: list[dict[str, Any]],
    snapshot: bool,
    recipe: Recipe,
    selected: dict[str, Any] | None,
    precision: Any,
) -> SpinSummary:
    """What a finished ``gan-rl spin`` reports: its iterations, steps, DPO losses and selection."""
    losses = [h["loss"] for h in log_history if "loss" in h]
    return SpinSummary(
        output_dir=str(out),
        iterations=[s.__dict__ for s in output.iterations],
        steps=output.global_step,
        seconds=round(seconds, 1),
        loss_first=losses[0] if losses else None,
        loss_last=losses[-1] if losses else None,
        snapshot=snapshot,
        merged_lora=recipe.model.lora is not None,
        sample_selection=selected,
        **precision.as_dict(),
    )


def open_spin_run(
    recipe: Recipe, out: Path, resume: str | bool | None, overwrite: bool
) -> tuple[bool | str | None, dict[str, Dataset]]:
    """(what :meth:`SpinTrainer.train` resumes from, the data's splits), after refusing an output directory
    that holds another run, as :func:`gan_rl.cli.runs.open_run` does for the other commands (a SPIN run
    keeps its checkpoints inside ``iteration-k/``, so its own rules apply).

    ``resume`` latest: the latest *complete* checkpoint of the first iteration not done (a kill while one
    was written leaves it partial), or True when that iteration has none yet (it starts over, from its
    saved pairs when sampling had finished; nothing on disk at all: a fresh run, as after a stop during
    the warm start). A path: that checkpoint, which must lie in the first iteration not done.
    """
    from gan_rl.trainer.spin.layout import RunLayout

    check_output_dir(out, bool(resume), overwrite, field="spin.output_dir")
    layout = RunLayout(out)
    if not resume:
        if layout.iterations_on_disk():
            raise RecipeError(
                f"spin.output_dir: {out} holds the iterations of an unfinished SPIN run; pass --resume to "
                "continue it or --overwrite to start again."
            )
        return None, load_raw_splits(recipe)
    done = layout.last_done()
    if resume is True or resume == "latest":
        folder = layout.iteration_dir(done + 1)
        started = has_checkpoints(folder)
        resume_from: bool | str = resolve_resume(folder, "latest", discriminator=False) if started else True
        if not started:
            logger.info("--resume: iteration %d has no checkpoint; it starts over (%d done).", done + 1, done)
    else:
        try:
            layout.resume_point(str(resume))
        except ValueError as exc:
            raise RecipeError(f"--resume: {str(exc).removeprefix('SpinTrainer: ')}") from None
        resume_from = resolve_resume(out, str(resume), discriminator=False)  # complete and readable
    return resume_from, load_raw_splits(recipe)


def iteration_setup(recipe: Recipe, raw: dict[str, Dataset], chat: bool):
    """What each iteration's DPOTrainer gets before it trains (:attr:`SpinTrainer.prepare_iteration`): the
    backend check, which needs a trainer, and a selection-by-samples callback of its own (each iteration's
    steps restart at 0, and it writes into ``iteration-k/``), which scores the starting model in iteration
    1 only: iteration k's start is iteration k - 1's end, scored at its last step."""

    def prepare(k: int, trainer: Any) -> None:
        check_backend(trainer, "spin")
        selection = recipe.sample_selection
        if selection is not None:
            callback = selection_callback(recipe, raw, chat, at_start=selection.at_start and k == 1)
            callback.attach(trainer)  # added to the trainer's callbacks, samples and saves through it

    return prepare


def stop_agreed(stop: PreemptionCallback) -> bool:
    """Whether a stop signal came, agreed by every process (one all-reduce with several): between SPIN
    iterations no trainer step does it, and one process must not start sampling while another stops."""
    signum = stop.request.signum
    if world_size() > 1:
        signum = int(all_reduce_(torch.tensor([signum], dtype=torch.long), "max").item())
        stop.request.signum = stop.request.signum or signum
    return signum != 0


def stopped_error(stop: PreemptionCallback, spin: Any, done: int) -> Exception:
    """Why :meth:`SpinTrainer.train` ended before its last iteration was done: a stop signal
    (:class:`Preempted`: inside an iteration, with the checkpoint the callback had written; between
    iterations, with the done iterations to resume from), else a callback that ended an iteration early."""
    PartialState().wait_for_everyone()  # the checkpoint complete on every process before any exits
    iterations = spin.args.iterations
    trainer = spin.trainer
    if stop.signum and trainer is not None:
        state = trainer.state
        return Preempted(
            stop.signum, state.global_step, state.max_steps, stop.checkpoint, iteration=(done + 1, iterations)
        )
    if stop.request.requested:
        return Preempted(stop.request.signum, 0, 0, None, iteration=(done, iterations))
    state = trainer.state if trainer is not None else None
    where = f" at step {state.global_step} of {state.max_steps}" if state is not None else ""
    return TrainingError(
        f"spin: a callback ended iteration {done + 1}{where} before its last step; the iteration is not done "
        "and the run has no final model (--resume continues it from its latest checkpoint)."
    )
