"""How well selection by samples can tell two models apart: its score on a few hundred prompts, against the
same statistic on all 750 test prompts.

Selection by samples (:mod:`gan_rl.eval.sample_selection`) scores a checkpoint by the n-gram two-sample
accuracy of its samples on a fixed set of validation prompts (200 in the frontier benchmark), and keeps
the lowest. This script asks, from generations already committed, how reliable that choice is at such an
n: from one generations file (one model at several temperatures, all on the same prompts) it draws
``--draws`` random subsets of ``--n`` prompts and, on each,

* scores every temperature (how far the score at n sits from the score on all prompts, and its spread
  over which prompts were drawn);
* takes the paired difference between two temperatures on the same prompts, as selection compares two
  checkpoints on its fixed prompts: its mean, its sd and how often its sign disagrees with the difference
  on all prompts (how often selection would pick the wrong one of two models that far apart).

Two temperatures of one model stand in for two checkpoints: their distance on all 750 prompts is of the
size that separates sft-star's checkpoints. ``--scoring`` also tries the cross-validated ROC AUC and log
loss of the same classifier, in case a statistic less coarse than accuracy separates better at the same
cost (sampling is the cost; the classifier is not). Writes ``benchmarks/results/selection_noise.json``.

    python benchmarks/selection_noise.py      # sft-star's generations, n = 200, 20 draws, all three scores
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gan_rl.eval.metrics import TWO_SAMPLE_SCORINGS  # noqa: E402
from gan_rl.eval.sample_selection import two_sample_ngram  # noqa: E402

GENERATIONS = REPO / "benchmarks" / "results" / "smollm2-twon-frontier" / "generations" / "sft-star-s0.jsonl"
SCORINGS = tuple(TWO_SAMPLE_SCORINGS)


def score(real: list[str], generated: list[str], scoring: str) -> float:
    """The selection's two-sample test (:func:`gan_rl.eval.sample_selection.two_sample_ngram`: TF-IDF word
    1-2-grams, logistic regression, stratified 5-fold cross-validation, seed 0) under ``scoring``. With
    ``accuracy`` it is exactly the selection's score; lower is closer to real for every scoring."""
    return two_sample_ngram(real, generated, scoring=scoring)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generations", type=Path, default=GENERATIONS)
    p.add_argument("--n", type=int, default=200, help="prompts per draw (the selection's --select-prompts)")
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--scoring", nargs="+", default=list(SCORINGS), choices=SCORINGS)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "selection_noise.json")
    args = p.parse_args(argv)

    rows = [json.loads(line) for line in args.generations.read_text().splitlines() if line.strip()]
    by_temperature: dict[float, dict[tuple[str, str], str]] = {}
    for row in rows:
        by_temperature.setdefault(row["temperature"], {})[(row["prompt"], row["real"])] = row["generated"]
    temperatures = sorted(by_temperature)
    keys = sorted(set.intersection(*(set(v) for v in by_temperature.values())))
    draws = [random.Random(seed).sample(keys, args.n) for seed in range(args.draws)]

    def at(temperature: float, subset: list[tuple[str, str]], scoring: str) -> float:
        return score([k[1] for k in subset], [by_temperature[temperature][k] for k in subset], scoring)

    report: dict = {"generations": str(args.generations.relative_to(REPO)), "prompts": len(keys)}
    report.update(n=args.n, draws=args.draws, scores={}, pairs={})
    reference = temperatures[len(temperatures) // 2]
    for scoring in args.scoring:
        per_t, on_draws = {}, {}
        for t in temperatures:
            subsets = on_draws[t] = [at(t, d, scoring) for d in draws]
            per_t[t] = {
                "all_prompts": at(t, keys, scoring),
                "mean": statistics.mean(subsets),
                "sd": statistics.stdev(subsets),
            }
            print(
                f"{scoring:>12}  T {t}: all {len(keys)} prompts {per_t[t]['all_prompts']:.3f}; {args.n} "
                f"prompts {per_t[t]['mean']:.3f} ± {per_t[t]['sd']:.3f}",
                flush=True,
            )
        report["scores"][scoring] = per_t
        pairs = {}
        for t in temperatures:
            if t == reference:
                continue
            full = per_t[t]["all_prompts"] - per_t[reference]["all_prompts"]
            diffs = [a - b for a, b in zip(on_draws[t], on_draws[reference], strict=True)]  # same prompts
            mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
            wrong = sum(1 for d in diffs if d * full < 0)
            pairs[f"T{t} - T{reference}"] = {
                "all_prompts": full,
                "mean": mean,
                "sd": sd,
                "wrong_sign": wrong,
                "draws": len(diffs),
            }
            print(
                f"{scoring:>12}  T {t} - T {reference}: all prompts {full:+.3f}; {args.n} prompts "
                f"{mean:+.3f} ± {sd:.3f}, sign wrong in {wrong}/{len(diffs)} draws",
                flush=True,
            )
        report["pairs"][scoring] = pairs
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
