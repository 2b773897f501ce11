"""The ``gan-rl`` command line: thin wrappers around :mod:`gan_rl.cli.train`."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from gan_rl.cli.algorithms import ALGORITHMS
from gan_rl.cli.recipe import Recipe, load_recipe
from gan_rl.errors import InputError, RecipeError, TrainingError

RESUME_OPTION = click.option(
    "--resume",
    is_flag=False,
    flag_value="latest",
    default=None,
    metavar="[CHECKPOINT]",
    help="Resume from the latest checkpoint in the output directory, or from CHECKPOINT.",
)
OVERWRITE_OPTION = click.option(
    "--overwrite", is_flag=True, help="Delete an earlier run in the output directory first."
)
SAMPLES_DEFAULT = 16
SET_HELP = "Override a recipe field, e.g. --set trainer.max_steps=10 (repeatable; the value is read as YAML)."


# Lines libraries log that say nothing a gan-rl user can act on, dropped where they are logged:
# (logger, how the message starts). Only these: every other warning of these libraries still shows.
LIBRARY_NOISE = (
    # peft imports bitsandbytes whenever it is installed; on a CPU with avx512_bf16 its backend looks up an
    # optional 4-bit kernel on the hub (refused offline, or not trusted) and says so on every command.
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
    # ... and, offline, the kernels library first says why it looked no further (for that kernel only).
    (
        "kernels._internals.hf_hub",
        "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'",
    ),
    # DeepSpeed (imported with accelerate's and TRL's DeepSpeed support) on a machine without a GPU.
    ("DeepSpeed", "Setting accelerator to CPU"),
    # datasets' JSON reader on a malformed file, before it raises: gan-rl then names the file and line itself.
    ("datasets.packaged_modules.json.json", "Failed to load JSON from file"),
)


class _DropMessages(logging.Filter):
    """Drops a logger's records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _silence_library_noise() -> None:
    """Drop :data:`LIBRARY_NOISE` before any library is imported (so that a command's error is its only
    line). Imports nothing: a filter set on a logger now stays on it when the library creates it later
    (``logging.getLogger`` returns the same object), and it drops only the named messages."""
    for name, prefix in LIBRARY_NOISE:
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.prefix == prefix for f in target.filters):
            target.addFilter(_DropMessages(prefix))


def _quiet_libraries() -> None:
    """Progress bars and library chatter off, our own INFO lines on: after the recipe is read (so that a
    recipe error comes within a second, before the libraries import)."""
    _silence_library_noise()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    warnings.filterwarnings("ignore", message=".*pin_memory.*")


def _load(argument: str, sets: list[str]) -> tuple[Recipe, str]:
    """The recipe a command's RECIPE argument names, with ``sets`` applied, and the file it was read from:
    a file when one exists at that path, else a recipe shipped with gan-rl of that name (``twon``,
    ``smollm2-twon``, ``quickstart``: :mod:`gan_rl.cli.shipped_recipes`)."""
    from gan_rl.cli.shipped_recipes import resolve_recipe

    path = resolve_recipe(argument)
    return load_recipe(path, sets), path


def _load_for_model(argument: str, sets: list[str]) -> tuple[Recipe, str]:
    """:func:`_load`, then the libraries quieted and the hub's fallback applied (:func:`_with_bundled_fallback`):
    what every command that loads the recipe's generator starts with."""
    recipe, path = _load(argument, sets)
    _quiet_libraries()
    return _with_bundled_fallback(recipe), path


def _with_bundled_fallback(recipe: Recipe) -> Recipe:
    """``recipe`` with its generator from a bundled GGUF copy where the hub cannot serve the model it names
    (:func:`gan_rl.cli.models.with_bundled_fallback`), and the one line that says so, from the main process
    only. After :func:`_quiet_libraries`: it imports transformers' side."""
    from gan_rl.cli.models import with_bundled_fallback

    recipe, line = with_bundled_fallback(recipe)
    if line is not None and os.environ.get("RANK", "0") == "0":  # accelerate launch: every rank reads it
        click.echo(line, err=True)
    return recipe


def _print_summary(summary, console) -> None:
    from rich.table import Table

    table = Table(title=f"gan-rl {summary.algorithm}: finished", show_header=False)
    table.add_row("policy steps", str(summary.steps))
    table.add_row("training time", f"{summary.seconds:.1f} s")
    table.add_row("discriminator rounds", str(summary.disc_rounds))
    if summary.disc_skipped_rounds:
        table.add_row("rounds skipped (discriminator too strong)", str(summary.disc_skipped_rounds))
    for name, value in summary.disc_stats.items():
        table.add_row(f"final {name}", f"{value:.3f}")
    if summary.reward_first is not None:
        table.add_row(
            "mean reward, first -> last log", f"{summary.reward_first:.3f} -> {summary.reward_last:.3f}"
        )
    if summary.distance_before is not None:
        table.add_row(
            "word distance to real (TV, 0 = same)",
            f"{summary.distance_before:.3f} -> {summary.distance_after:.3f}",
        )
        table.add_row(
            "final discriminator P(real), before -> after",
            f"{summary.judge_before:.3f} -> {summary.judge_after:.3f}",
        )
    if summary.distributed != "single":
        table.add_row("distributed", summary.distributed)
    if len(summary.fingerprints) > 1:
        same = len(set(summary.fingerprints)) == 1
        table.add_row(
            "discriminator equal on all ranks",
            f"{'yes' if same else 'NO'} ({len(summary.fingerprints)} ranks)",
        )
    console.print(table)
    _print_selection(summary.sample_selection)
    click.echo(f"outputs: {summary.output_dir} (generator, discriminator/, run_summary.json)")
    for sample in summary.samples[:3]:
        click.echo(f"prompt  {sample['prompt']}")
        for name in ("real", "before", "after"):
            click.echo(f"  {name:<7} {sample[name]}")


def _print_selection(selection: dict | None) -> None:
    """One line about selection by samples (the recipe's ``sample_selection:``), when the run selected."""
    if selection and selection.get("best_step") is not None:
        from gan_rl.cli.selection import describe

        click.echo(describe(selection))


TEMPERATURE_OPTION = click.option(
    "--temperature",
    default=None,
    metavar="T[,T...]",
    help="Sampling temperature(s), comma-separated (sets evaluate.temperatures), e.g. 0.7,0.85,1.0.",
)


def _temperature_override(value: str | None) -> list[str]:
    """``--temperature 0.7,0.85`` as the override ``evaluate.temperatures=[0.7, 0.85]``."""
    if value is None:
        return []
    parts = [p.strip() for p in value.split(",")]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise RecipeError(
            f"--temperature {value!r}: expected positive numbers separated by commas, e.g. 0.7,0.85,1.0."
        ) from None
    return [f"evaluate.temperatures=[{', '.join(repr(t) for t in numbers)}]"]


def _resume_command(command: str, recipe: str, sets: list[str], output_dir: str | None, *extra: str) -> str:
    """The command that resumes a stopped run: this one with ``--resume`` (the latest checkpoint) in place
    of ``--resume PATH``, and without ``--overwrite`` (which would delete the run) or
    ``--fresh-discriminator`` (the checkpoint has its discriminator)."""
    words = ["gan-rl", command, recipe]
    for value in sets:
        words += ["--set", value]
    if output_dir:
        words += ["--output-dir", output_dir]
    return shlex.join([*words, *extra, "--resume"])


def _stopped(stop, resume_command: str) -> None:
    """A run stopped by SIGTERM or Ctrl-C (:mod:`gan_rl.cli.preemption`): one line from the main process
    (where the checkpoint is, the command that resumes), exit code 128 + the signal (143, 130)."""
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        launcher = " (under the same launcher)" if state.num_processes > 1 else ""
        click.echo(f"{stop}; resume with{launcher}: {resume_command}", err=True)
    state.wait_for_everyone()  # no process exits (and has its launcher stop the rest) before the line
    sys.exit(stop.exit_code)


def _unreadable_or_raise(exc: Exception, resume) -> None:
    """Exit 2 with one line when ``exc`` is a loader's error for a truncated or corrupt checkpoint file
    met while resuming (:func:`gan_rl.cli.outputs.unreadable_file_error`, a backstop: the checkpoint's files
    are checked before any model loads); re-raise anything else."""
    from gan_rl.cli.outputs import unreadable_file_error

    error = unreadable_file_error(exc) if resume else None
    if error is None:
        raise exc
    click.echo(f"error: {error}", err=True)
    sys.exit(2)


# The library names what it was given in Python's terms (gan_rl.errors.InputError.PYTHON_TERMS); the
# command line's user gave the same things as flags and recipe keys.
CLI_TERMS = {
    "resume": "--resume",
    "resume_earlier": "--resume CHECKPOINT",
    "fresh_discriminator": "--fresh-discriminator",
    "discriminator": "discriminator",
    "discriminator_config": "the recipe's 'discriminator' section",
    "generator_lora": "model.lora",
    "gumbel": "gan-rl gumbel",
}


@contextlib.contextmanager
def _one_line_errors(resume=None, resume_command: Callable[[], str] | None = None) -> Iterator[None]:
    """Every command's failures as one line and its exit code: bad input (:class:`RecipeError`) exit 2, a
    failed run (:class:`TrainingError`) exit 1 and no summary. With ``resume_command`` (the training
    commands) also a stop signal (:class:`gan_rl.cli.preemption.Preempted`: the line that resumes, 143 /
    130) and a checkpoint file the trainer could not read while resuming (exit 2)."""
    try:
        yield
    except RecipeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except InputError as exc:  # the library's bad input, named as the command line's user names it
        click.echo(f"error: {exc.render(CLI_TERMS)}", err=True)
        sys.exit(2)
    except TrainingError as exc:  # the run failed: one line, no summary, exit 1 (not "completed")
        click.echo(f"training failed: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        if resume_command is None:
            raise
        from gan_rl.cli.preemption import Preempted

        if isinstance(exc, Preempted):  # SIGTERM / Ctrl-C: a checkpoint, no summary
            _stopped(exc, resume_command())
        _unreadable_or_raise(exc, resume)


def _train(
    algorithm: str,
    recipe_path: str,
    overrides: tuple[str, ...],
    output_dir: str | None,
    resume,
    overwrite: bool,
    samples: int,
    fresh_discriminator: bool = False,
) -> None:
    from accelerate import PartialState
    from rich.console import Console

    console = Console(stderr=False)
    sets = list(overrides) + ([f"trainer.output_dir={output_dir}"] if output_dir else [])
    extra = ["--samples", str(samples)] if samples != SAMPLES_DEFAULT else []
    with _one_line_errors(
        resume, lambda: _resume_command(algorithm, recipe_path, list(overrides), output_dir, *extra)
    ):
        recipe = _load_for_model(recipe_path, sets)[0]
        from gan_rl.cli.train import run

        summary = run(
            algorithm,
            recipe,
            resume=resume,
            overwrite=overwrite,
            num_samples=samples,
            fresh_discriminator=fresh_discriminator,
        )
    if PartialState().is_main_process:
        _print_summary(summary, console)


def _train_command(algorithm: str, doc: str, name: str | None = None):
    @click.command(name=name or algorithm, help=doc)
    @click.argument("recipe", type=click.Path(dir_okay=False))
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
    @click.option("--output-dir", default=None, help="Shortcut for --set trainer.output_dir=DIR.")
    @RESUME_OPTION
    @OVERWRITE_OPTION
    @click.option(
        "--samples",
        default=SAMPLES_DEFAULT,
        show_default=True,
        help="Held-out prompts sampled before and after training for the summary (0: none).",
    )
    @click.option(
        "--fresh-discriminator",
        is_flag=True,
        help="With --resume: accept a checkpoint without a discriminator and warm up a new one.",
    )
    def command(recipe, overrides, output_dir, resume, overwrite, samples, fresh_discriminator):
        _train(algorithm, recipe, overrides, output_dir, resume, overwrite, samples, fresh_discriminator)

    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gan-rl")
def main() -> None:
    """Adversarial RL for LLMs: a discriminator's judgement is the reward for TRL's trainers.

    RECIPE: a YAML file, or the name of a recipe shipped with gan-rl (quickstart, twon, smollm2-twon).
    """
    _silence_library_noise()  # first: every command imports the libraries that print it


for _algorithm in ALGORITHMS.values():  # one command per registered algorithm
    main.add_command(_train_command(_algorithm.name, _algorithm.help))
    for _alias in _algorithm.aliases:  # TRL's names: grpo = ppo, rloo = reinforce
        _doc = f"TRL's name for 'gan-rl {_algorithm.name}' (the same command, the same recipe section)."
        main.add_command(_train_command(_algorithm.name, _doc, name=_alias))


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--output-dir", default=None, help="Shortcut for --set sft.output_dir=DIR.")
@RESUME_OPTION
@OVERWRITE_OPTION
def sft(recipe: str, overrides: tuple[str, ...], output_dir: str | None, resume, overwrite: bool) -> None:
    """Supervised fine-tuning on the real responses (TRL SFTTrainer): the baseline, and the warm start
    of 'model.warm_start: sft'. Writes to sft.output_dir (default: trainer.output_dir + '-sft')."""
    from accelerate import PartialState

    sets = list(overrides) + ([f"sft.output_dir={output_dir}"] if output_dir else [])
    with _one_line_errors(resume, lambda: _resume_command("sft", recipe, list(overrides), output_dir)):
        parsed = _load_for_model(recipe, sets)[0]
        from gan_rl.cli.sft import run_sft
        from gan_rl.trainer.callback import PolicyGuard

        # A diverged generator (NaN weights) stops the run naming the step, instead of being saved as done.
        summary = run_sft(
            parsed, resume=resume, overwrite=overwrite, callbacks=[PolicyGuard("sft.learning_rate")]
        )
    if PartialState().is_main_process:
        first, last = summary.train_loss_first, summary.train_loss_last
        losses = f"{first:.3f} -> {last:.3f}" if first is not None and last is not None else "-"
        click.echo(
            f"gan-rl sft: finished {summary.steps} steps in {summary.seconds:.1f} s; train loss {losses}"
        )
        if summary.best_step is not None:
            ended = "early stopping ended the run; " if summary.stopped_early else ""
            click.echo(
                f"validation loss: best {summary.best_validation_loss:.3f} at step {summary.best_step} "
                f"({ended}{len(summary.validation_losses)} evaluations)"
            )
        if summary.eval_loss is not None:
            click.echo(f"held-out (test) loss: {summary.eval_loss:.3f}")
        _print_selection(summary.sample_selection)
        click.echo(f"outputs: {summary.output_dir}")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--output-dir", default=None, help="Shortcut for --set spin.output_dir=DIR.")
@RESUME_OPTION
@OVERWRITE_OPTION
def spin(recipe: str, overrides: tuple[str, ...], output_dir: str | None, resume, overwrite: bool) -> None:
    """SPIN self-play (TRL DPOTrainer once per iteration): each iteration samples the policy on the train
    prompts and trains it to rank every real response above its own sample, against the policy at the
    start of the iteration. Writes to spin.output_dir (default: trainer.output_dir + '-spin')."""
    from accelerate import PartialState

    sets = list(overrides) + ([f"spin.output_dir={output_dir}"] if output_dir else [])
    with _one_line_errors(resume, lambda: _resume_command("spin", recipe, list(overrides), output_dir)):
        parsed = _load_for_model(recipe, sets)[0]
        from gan_rl.cli.spin import run_spin
        from gan_rl.trainer.callback import PolicyGuard

        # A diverged policy (NaN weights) stops the run naming the step, instead of being saved as done.
        summary = run_spin(
            parsed, resume=resume, overwrite=overwrite, callbacks=[PolicyGuard("spin.learning_rate")]
        )
    if PartialState().is_main_process:
        first, last = summary.loss_first, summary.loss_last
        losses = f"{first:.3f} -> {last:.3f}" if first is not None and last is not None else "-"
        click.echo(
            f"gan-rl spin: finished {len(summary.iterations)} iterations ({summary.steps} steps) in "
            f"{summary.seconds:.1f} s; DPO loss {losses}"
        )
        for it in summary.iterations:
            metrics = it.get("metrics") or {}
            accuracy, margin = metrics.get("rewards/accuracies"), metrics.get("rewards/margins")
            ranked = (
                f"; real ranked above own sample {accuracy:.2f}, margin {margin:.3f}"
                if accuracy is not None and margin is not None
                else ""
            )
            reused = " (iteration 1's samples)" if it.get("reused_samples") else ""
            click.echo(
                f"  iteration {it['iteration']}: {it['pairs']} pairs{reused}, {it['steps']} steps{ranked}; "
                f"sampling {it['sampling_seconds']:.1f} s, training {it['training_seconds']:.1f} s"
            )
        _print_selection(summary.sample_selection)
        click.echo(f"outputs: {summary.output_dir} (final policy, iteration-k/, run_summary.json)")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option(
    "--model",
    "model_path",
    required=True,
    help="A generator directory (full model or LoRA adapter), or a .gguf file (e.g. the untrained base model).",
)
@click.option("--output", default=None, help="JSONL file to write (default: MODEL/generations.jsonl).")
@TEMPERATURE_OPTION
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
def generate(
    recipe: str, model_path: str, output: str | None, temperature: str | None, overrides: tuple[str, ...]
) -> None:
    """Sample one response per held-out prompt (data.test) with the settings of 'evaluate:' into JSONL
    (one row per prompt and temperature)."""
    with _one_line_errors():
        parsed = _load(recipe, [*overrides, *_temperature_override(temperature)])[0]
        _quiet_libraries()
        from gan_rl.cli.evaluate import generate as run_generate

        path = run_generate(parsed, model_path, output)
    click.echo(f"wrote {path}")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    metavar="[LABEL=]PATH",
    help="A generator directory, a .gguf file, or a JSONL file from 'gan-rl generate' (repeatable).",
)
@click.option(
    "--output-dir", default=None, help="Where the report goes (default: trainer.output_dir + '-eval')."
)
@TEMPERATURE_OPTION
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
def evaluate(
    recipe: str,
    models: tuple[str, ...],
    output_dir: str | None,
    temperature: str | None,
    overrides: tuple[str, ...],
) -> None:
    """Compare generators on the held-out split with metrics no training sees: a classifier two-sample
    test, MAUVE and Fréchet distance of sentence embeddings, diversity, length, and an optional domain
    judge; with several temperatures, each model's quality-diversity curve."""
    with _one_line_errors():
        parsed = _load(recipe, [*overrides, *_temperature_override(temperature)])[0]
        _quiet_libraries()
        from gan_rl.cli.evaluate import evaluate as run_evaluate
        from gan_rl.eval.report import REPORT_FILE

        out = output_dir or str(parsed.trainer.get("output_dir", "outputs/gan-rl")).rstrip("/") + "-eval"
        report = run_evaluate(parsed, list(models), out)
    _print_evaluation(report)
    click.echo(f"report: {Path(out) / REPORT_FILE} (metrics.json, plots, generations/)")


def _print_evaluation(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from gan_rl.eval.evaluation import REAL_LABEL
    from gan_rl.eval.report import COLUMNS, format_value

    results = report["results"]
    if report.get("best_temperature"):  # several temperatures: each model at its best (all in report.md)
        best = {f"{m}@{b['temperature']:g}": results[b["row"]] for m, b in report["best_temperature"].items()}
        results = {REAL_LABEL: results[REAL_LABEL], **best}
    columns = [c for c in COLUMNS if any(c[0] in r for r in results.values())]
    # One column per model (few) and one row per metric (many): fits a narrow terminal.
    table = Table(title=f"gan-rl evaluate: {report['held_out_prompts']} held-out prompts")
    table.add_column("metric")
    for label in results:
        table.add_column(label, justify="right")
    for key, title, _ in columns:
        table.add_row(title, *(format_value(row.get(key)) for row in results.values()))
    Console().print(table)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option(
    "--algorithm",
    type=click.Choice([*ALGORITHMS, *(n for a in ALGORITHMS.values() for n in a.aliases), "sft", "spin"]),
    default="ppo",
    show_default=True,
)
def check(recipe: str, overrides: tuple[str, ...], algorithm: str) -> None:
    """Validate RECIPE (sections, TRL config, checkpoint paths, data files and columns) without loading a
    model."""
    with _one_line_errors():
        parsed, path = _load_for_model(
            recipe, list(overrides)
        )  # a fallback: its line, the copy's checks below
        from gan_rl.cli.data import load_raw_splits
        from gan_rl.cli.evaluate import load_contrast
        from gan_rl.cli.models import generator_checkpoint, preflight_checkpoints
        from gan_rl.cli.selection import selection_config
        from gan_rl.cli.trl_config import (
            build_sft_config,
            build_spin_config,
            build_trainer_config,
            check_spin_model,
            check_train_rows,
            sft_output_dir,
            spin_output_dir,
        )

        # Every checkpoint resolves as the run resolves it: a local path must exist, with its GGUF file.
        if algorithm == "sft":
            generator_checkpoint(parsed.model, parsed.resolve_path, Path(sft_output_dir(parsed)))
        elif algorithm == "spin":
            from gan_rl.cli.spin import spin_discriminator

            check_spin_model(parsed)
            spin_discriminator(parsed)
            generator_checkpoint(parsed.model, parsed.resolve_path, Path(spin_output_dir(parsed)))
        else:
            args = build_trainer_config(parsed, algorithm, remove_unused_columns=False)
            preflight_checkpoints(parsed, args.output_dir)
        if algorithm in ("sft", "spin") or parsed.sft or parsed.model.warm_start == "sft":
            sft_args = build_sft_config(parsed)
            if algorithm == "sft":
                args = sft_args
        if algorithm == "spin" or parsed.spin:  # the section is checked for every command, as ppo: is
            spin_args = build_spin_config(parsed)
            if algorithm == "spin":
                args = spin_args
        splits = load_raw_splits(parsed)
        # Fewer rows than one batch would train nothing and report "completed": as the run refuses it.
        check_train_rows(algorithm, args, len(splits["train"]))
        selection_config(parsed, splits)  # scikit-learn there, enough validation rows for the folds
        if parsed.model.warm_start_data is not None:  # the warm start's own data, read as the run reads it
            from gan_rl.cli.sft import check_warm_start_data

            check_warm_start_data(parsed)
        contrast = parsed.evaluate.contrast
        if contrast is not None:
            for name in ("train", "test"):
                source = getattr(contrast, name)
                if source is not None:
                    splits[f"contrast {name}"] = load_contrast(parsed, name, source)
    rows = ", ".join(f"{name}: {len(ds)} rows" for name, ds in splits.items())
    click.echo(f"{Path(path)}: valid for {algorithm} ({rows}).")


if __name__ == "__main__":
    main()
