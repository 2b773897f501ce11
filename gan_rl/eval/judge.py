"""The left/right judge of ``gan-rl evaluate``: which side of a contrast a text reads as."""

from __future__ import annotations

import numpy as np

from gan_rl.eval.metrics import TOKEN_PATTERN


class SideJudge:
    """The domain judge: target side (the recipe's data) versus contrast side, trained on real training
    responses only (it never sees a generation while fitting): logistic regression on TF-IDF word
    1-2-grams, balanced sides.

    Why this shape: on TWON left/right the n-grams (party names, slogans, hashtags) separate the sides
    better than sentence embeddings, and the number of rows matters most (held-out accuracies of each
    variant: ``benchmarks/results/judge_strength.md``).
    """

    def __init__(self, target: list[str], contrast: list[str], seed: int) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        rng = np.random.default_rng(seed)
        n = min(len(target), len(contrast))
        target = [target[i] for i in np.sort(rng.choice(len(target), size=n, replace=False))]
        contrast = [contrast[i] for i in np.sort(rng.choice(len(contrast), size=n, replace=False))]
        self.vectorizer = TfidfVectorizer(
            token_pattern=TOKEN_PATTERN, ngram_range=(1, 2), min_df=2, sublinear_tf=True, dtype=np.float32
        )
        features = self.vectorizer.fit_transform(target + contrast)
        labels = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
        self.model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit(features, labels)
        self.rows_per_side = n

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """P(target side) for each text."""
        return self.model.predict_proba(self.vectorizer.transform(texts))[:, 1]

    def prob_target(self, texts: list[str]) -> float:
        """Mean P(target side) over ``texts``."""
        return float(self.probabilities(texts).mean())

    def accuracy(self, target: list[str], contrast: list[str]) -> float:
        """Mean of the per-side accuracies on real texts (0.5 is chance even for unequal sides)."""
        hit_target = (self.probabilities(target) > 0.5).mean()
        hit_contrast = (self.probabilities(contrast) <= 0.5).mean()
        return float((hit_target + hit_contrast) / 2)
