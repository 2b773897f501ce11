"""Evaluation metrics that no part of training sees.

``gan-rl evaluate`` compares generators (base, SFT, GAN-trained) on held-out prompts by their responses
versus the real ones. Every metric here is independent of the discriminator and the reward, so a
generator cannot have been optimised against it: diversity (distinct-n, self-BLEU), distribution
distance in a frozen sentence-embedding space (Fréchet distance), length statistics, a classifier
two-sample test (can a fresh classifier still tell generated from real?), and a domain judge trained
on real data only (does the output sit on the intended side of two real distributions?).

All functions take and return numpy arrays / plain floats and are deterministic given their seed.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from gan_rl.utils.padding import ensure_pad_token

logger = logging.getLogger(__name__)

TOKEN_PATTERN = r"\w+|[^\w\s]"
_TOKEN_RE = re.compile(TOKEN_PATTERN)


def word_tokens(text: str) -> list[str]:
    """Lowercased words and punctuation marks: the one tokenization all text metrics here share."""
    return _TOKEN_RE.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


# --------------------------------------------------------------------------------------------------
# Sentence embeddings
# --------------------------------------------------------------------------------------------------


class TextEncoder:
    """Sentence embeddings of an encoder checkpoint, pooled as that encoder was trained, L2-normalised.

    A frozen encoder that none of the compared generators was trained against gives a neutral space in
    which to measure how far generated responses sit from real ones (Fréchet distance, two-sample test).
    Loaded with ``sentence_transformers.SentenceTransformer``, which reads the checkpoint's own pooling
    (``modules.json``, ``1_Pooling/``: mean for all-MiniLM-L6-v2, CLS for the BGE family), so a
    CLS-pooled encoder is no longer mean-pooled. A plain ``transformers`` checkpoint without that
    configuration gets sentence-transformers' fallback: mean pooling for an encoder (and, since
    sentence-transformers 6, last-token pooling for a causal LM). Embeddings are normalised here whatever
    the checkpoint's own modules do.
    """

    def __init__(
        self,
        name_or_path: str,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        max_length: int = 128,
        trust_remote_code: bool = False,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        if batch_size < 1 or max_length < 1:
            raise ValueError(
                f"TextEncoder: batch_size and max_length must be >= 1, got {batch_size}, {max_length}"
            )
        self.name_or_path = str(name_or_path)
        self.device = torch.device(device)
        self.batch_size = batch_size
        try:
            self.model = SentenceTransformer(
                self.name_or_path,
                device=str(self.device),
                trust_remote_code=trust_remote_code,
                model_kwargs={"dtype": torch.float32},
            )
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"TextEncoder: cannot load encoder checkpoint {self.name_or_path!r}: {exc}"
            ) from None
        self.tokenizer = self.model.tokenizer
        # Right padding: absolute position embeddings then see the same positions batched or alone.
        self.tokenizer.padding_side = "right"
        if ensure_pad_token(self.tokenizer) is None:
            raise ValueError(
                f"TextEncoder: the tokenizer of {self.name_or_path!r} has no pad, eos or unk token"
            )
        config = getattr(getattr(self.model[0], "auto_model", None), "config", None)
        positions = getattr(config, "max_position_embeddings", None)
        self.max_length = min(max_length, positions) if positions else max_length
        self.model.max_seq_length = self.max_length
        self.model.eval()

    @property
    def dim(self) -> int:
        """Embedding width (the pooled output's size: the encoder's hidden size for mean / CLS pooling)."""
        # sentence-transformers 6 renamed the method (the old name warns there; 3-5 have only the old one).
        dimension = getattr(self.model, "get_embedding_dimension", None)
        return int(dimension() if dimension else self.model.get_sentence_embedding_dimension())

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts`` as rows of a float32 array of shape ``(len(texts), dim)``, each of unit norm.

        sentence-transformers batches by length and returns the input order. Empty strings are allowed; a
        text that yields no tokens at all (a tokenizer without special tokens) gets the zero vector, as a
        model cannot run on an empty sequence.
        """
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"] if texts else []
        keep = [i for i, row in enumerate(ids) if len(row) > 0]
        if keep:
            out[keep] = self.model.encode(
                [texts[i] for i in keep],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ).astype(np.float32, copy=False)
        return out


# --------------------------------------------------------------------------------------------------
# Diversity
# --------------------------------------------------------------------------------------------------


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams / total n-grams over all texts (n-grams do not cross text boundaries).

    Low values mean repetition within and across responses (mode collapse); 0.0 when there are no n-grams.
    """
    if n < 1:
        raise ValueError(f"distinct_n: n must be >= 1, got {n}")
    counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        counts.update(_ngrams(word_tokens(text), n))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0


def word_distance(generated: list[str], real: list[str]) -> float:
    """Total-variation distance between the word (unigram) distributions of two sets of texts.

    0 means the same word frequencies, 1 no word in common. Crude, but independent of the discriminator
    and of training, so it shows whether samples moved toward the real data.
    """
    g = Counter(w for t in generated for w in word_tokens(t))
    r = Counter(w for t in real for w in word_tokens(t))
    ng, nr = sum(g.values()), sum(r.values())
    if ng == 0 or nr == 0:
        return 1.0
    return 0.5 * sum(abs(g[w] / ng - r[w] / nr) for w in set(g) | set(r))


def self_bleu(texts: list[str], max_n: int = 4, max_texts: int = 300, seed: int = 0) -> float:
    """Mean sentence BLEU of each text against all the others as references, on the 0-1 scale (sacreBLEU's
    score / 100); higher = less diverse.

    The BLEU is sacreBLEU's ``sentence_bleu`` with its defaults (13a tokenization, case-sensitive, ``exp``
    smoothing, effective order; signature ``nrefs:N-1|case:mixed|eff:yes|tok:13a|smooth:exp``), so the
    number is the one any sacreBLEU user gets, not a hand-written variant. Calling ``sentence_bleu`` once per
    text would extract every other text's n-grams again (quadratic); instead each text is tokenized once
    and, for each n-gram, only its largest and runner-up count over the texts are kept, which answers
    sacreBLEU's "largest count in any reference but me". The counts then go through sacreBLEU's
    ``BLEU.compute_bleu`` (smoothing, brevity penalty against the closest reference length). The tests check
    the result against ``sacrebleu.sentence_bleu`` text by text. Texts are subsampled to ``max_texts`` with
    ``seed``; nan for fewer than two texts (no references).
    """
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    if max_n < 1:
        raise ValueError(f"self_bleu: max_n must be >= 1, got {max_n}")
    if max_texts < 2:
        raise ValueError(f"self_bleu: max_texts must be >= 2, got {max_texts}")
    if len(texts) > max_texts:
        keep = np.random.default_rng(seed).choice(len(texts), size=max_texts, replace=False)
        texts = [texts[i] for i in np.sort(keep)]
    if len(texts) < 2:
        return float("nan")
    bleu = BLEU(effective_order=True, max_ngram_order=max_n)  # sentence_bleu's settings
    counted = [extract_all_word_ngrams(bleu.tokenizer(str(t).rstrip()), 1, max_n) for t in texts]
    # n-gram -> [best count, text holding it, best count among the other texts].
    tops: dict[tuple[str, ...], list[int]] = {}
    for i, (counter, _) in enumerate(counted):
        for gram, c in counter.items():
            entry = tops.get(gram)
            if entry is None:
                tops[gram] = [c, i, 0]
            elif c > entry[0]:
                entry[2], entry[0], entry[1] = entry[0], c, i
            elif c > entry[2]:
                entry[2] = c
    lengths = np.array([length for _, length in counted])
    scores = []
    for i, (counter, hyp_len) in enumerate(counted):
        correct, total = [0] * max_n, [0] * max_n
        for gram, c in counter.items():
            best, owner, second = tops[gram]
            total[len(gram) - 1] += c
            correct[len(gram) - 1] += min(c, second if owner == i else best)
        others = np.delete(lengths, i)
        diff = np.abs(others - hyp_len)
        ref_len = int(others[diff == diff.min()].min())  # the closest reference length, ties to the shorter
        score = BLEU.compute_bleu(
            correct, total, hyp_len, ref_len, bleu.smooth_method, bleu.smooth_value, True, max_n
        )
        scores.append(score.score / 100.0)
    return float(np.mean(scores))


# --------------------------------------------------------------------------------------------------
# Distribution distances
# --------------------------------------------------------------------------------------------------


def frechet_distance(x: np.ndarray, y: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``x`` and ``y`` (as FID does for images).

    ``||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 sqrt(S_x S_y))``. As in the reference FID code, a singular
    product (common when there are fewer rows than dimensions) is retried with ``eps`` added to the
    covariance diagonals, and numerical imaginary parts of the matrix square root are dropped. Clipped
    at 0.
    """
    from scipy import linalg

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"frechet_distance: need two 2-D arrays of equal width, got {x.shape} and {y.shape}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"frechet_distance: need at least 2 rows per sample, got {len(x)} and {len(y)}")
    diff = x.mean(axis=0) - y.mean(axis=0)
    sx = np.atleast_2d(np.cov(x, rowvar=False))
    sy = np.atleast_2d(np.cov(y, rowvar=False))

    def sqrt_product(offset: float) -> np.ndarray:
        eye = np.eye(sx.shape[0]) * offset
        return linalg.sqrtm((sx + eye) @ (sy + eye))

    covmean = sqrt_product(0.0)
    if not np.isfinite(covmean).all() or (
        np.iscomplexobj(covmean) and not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
    ):
        logger.debug("frechet_distance: singular covariance product; adding %g to the diagonals", eps)
        covmean = sqrt_product(eps)
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3:
            logger.warning("frechet_distance: dropping an imaginary part of %.3g in sqrt(S_x S_y)", imag)
        covmean = covmean.real
    if not np.isfinite(covmean).all():
        raise ValueError("frechet_distance: the covariance square root is not finite")
    value = float(diff @ diff + np.trace(sx) + np.trace(sy) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def length_stats(generated: list[str], real: list[str]) -> dict[str, float]:
    """Response lengths in word tokens: means, and two distances between the length distributions.

    Length is the cheapest signal a discriminator can exploit and a generator can game, so it is worth
    reporting on its own. Keys: ``mean_generated``, ``mean_real``, ``wasserstein`` (in tokens) and
    ``ks`` (Kolmogorov-Smirnov statistic, in [0, 1]).
    """
    from scipy import stats

    if not generated or not real:
        raise ValueError(f"length_stats: need texts on both sides, got {len(generated)} and {len(real)}")
    gen = np.array([len(word_tokens(t)) for t in generated], dtype=float)
    ref = np.array([len(word_tokens(t)) for t in real], dtype=float)
    return {
        "mean_generated": float(gen.mean()),
        "mean_real": float(ref.mean()),
        "wasserstein": float(stats.wasserstein_distance(gen, ref)),
        "ks": float(stats.ks_2samp(gen, ref).statistic),
    }


# --------------------------------------------------------------------------------------------------
# Classifiers: two-sample test and domain judge
# --------------------------------------------------------------------------------------------------


def _classifier(seed: int, C: float = 1.0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))


def _balanced(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the larger set to the size of the smaller, so accuracy 0.5 means chance."""
    n = min(len(a), len(b))
    if len(a) > n:
        a = a[np.sort(rng.choice(len(a), size=n, replace=False))]
    if len(b) > n:
        b = b[np.sort(rng.choice(len(b), size=n, replace=False))]
    return a, b


def _as_rows(name: str, *arrays: np.ndarray) -> list[np.ndarray]:
    out = [np.asarray(a, dtype=np.float64) for a in arrays]
    if any(a.ndim != 2 for a in out) or len({a.shape[1] for a in out}) != 1:
        raise ValueError(f"{name}: need 2-D feature arrays of equal width, got {[a.shape for a in out]}")
    return out


# What the two-sample test can report of its held-out predictions (scikit-learn scorer names), and the
# value of each when real and generated are indistinguishable. Higher is more separable for all three.
TWO_SAMPLE_SCORINGS = {"accuracy": 0.5, "roc_auc": 0.5, "neg_log_loss": -float(np.log(2.0))}


def two_sample_accuracy(
    real: np.ndarray, generated: np.ndarray, folds: int = 5, seed: int = 0, scoring: str = "accuracy"
) -> float:
    """Classifier two-sample test: how well a fresh classifier tells real (1) from generated (0).

    Held-out accuracy of a logistic regression on standardised features under stratified k-fold
    cross-validation, after balancing the classes by subsampling the larger set with ``seed``. 0.5 means
    the generations are indistinguishable from real responses in this feature space; 1.0 means trivially
    separable. Unlike the training discriminator, this classifier never fed back into the generator.

    ``scoring`` reports the same held-out predictions another way (:data:`TWO_SAMPLE_SCORINGS`):
    ``roc_auc`` (chance 0.5) or ``neg_log_loss`` (chance -ln 2), which use the classifier's confidence
    and not only its side of 0.5; ``benchmarks/selection_noise.py`` measures whether they are less noisy.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    real, generated = _as_rows("two_sample_accuracy", real, generated)
    if scoring not in TWO_SAMPLE_SCORINGS:
        raise ValueError(
            f"two_sample_accuracy: scoring must be one of {sorted(TWO_SAMPLE_SCORINGS)}, got {scoring!r}"
        )
    if folds < 2:
        raise ValueError(f"two_sample_accuracy: folds must be >= 2, got {folds}")
    if min(len(real), len(generated)) < folds:
        raise ValueError(
            f"two_sample_accuracy: need at least {folds} rows per class for {folds}-fold cross-validation, "
            f"got {len(real)} real and {len(generated)} generated"
        )
    real, generated = _balanced(real, generated, np.random.default_rng(seed))
    features = np.concatenate([real, generated])
    labels = np.concatenate([np.ones(len(real), dtype=int), np.zeros(len(generated), dtype=int)])
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(_classifier(seed), features, labels, cv=cv, scoring=scoring).mean())


def ngram_features(
    texts_a: list[str], texts_b: list[str], max_features: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """TF-IDF word 1-2-gram features of both text sets, fitted on the two together (dense float32).

    An encoder-free view for the two-sample test: tiny generators produce word salad that a sentence
    encoder may smooth over but n-gram statistics catch. ``max_features`` keeps the most frequent n-grams
    so the dense arrays stay small for ~1000 texts.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        token_pattern=TOKEN_PATTERN,
        lowercase=True,
        ngram_range=(1, 2),
        max_features=max_features,
        dtype=np.float32,
    )
    try:
        matrix = vectorizer.fit_transform(list(texts_a) + list(texts_b))
    except ValueError as exc:  # empty vocabulary: every text is empty
        raise ValueError(
            f"ngram_features: no word tokens in the {len(texts_a) + len(texts_b)} texts ({exc})"
        ) from None
    dense = matrix.toarray()
    return dense[: len(texts_a)], dense[len(texts_a) :]


def judge_shift(p_generated: float, p_target_real: float, p_contrast_real: float) -> float:
    """Where the generations sit between the contrast side (0) and the target side (1).

    ``(p_generated - p_contrast_real) / (p_target_real - p_contrast_real)``, from mean judge probabilities;
    normalising by the real sides makes judges of different sharpness comparable. Not clipped: values
    beyond 1 overshoot the target side. nan when the judge does not separate the real sides.
    """
    denominator = p_target_real - p_contrast_real
    if not math.isfinite(denominator) or abs(denominator) < 1e-8:
        return float("nan")
    return float((p_generated - p_contrast_real) / denominator)


# --------------------------------------------------------------------------------------------------
# MAUVE
# --------------------------------------------------------------------------------------------------

# The mauve-text package's defaults (Pillutla et al., 2021), written out so that metrics.json records them:
# a score is comparable with another only at the same settings and the same number of texts per side.
MAUVE_SETTINGS: dict[str, float | int | str] = {
    "num_buckets": "auto",  # k-means clusters: n / 10 of the smaller side
    "kmeans_explained_var": 0.9,  # PCA before k-means keeps this much variance
    "kmeans_num_redo": 5,
    "kmeans_max_iter": 500,
    "divergence_curve_discretization_size": 25,
    "mauve_scaling_factor": 5,
}


def mauve_available() -> bool:
    """Whether the mauve-text package (the ``eval`` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("mauve") is not None


def mauve_score(real: np.ndarray, generated: np.ndarray, seed: int = 0) -> float:
    """MAUVE between real (P) and generated (Q) texts, from their feature rows (here the evaluation
    encoder's sentence embeddings, so no second featurizer is downloaded).

    The area under the divergence frontier of the two quantized distributions: 1.0 when they coincide,
    toward 0 as they separate; it weighs both kinds of error (generations where real texts are not, real
    texts the generator never produces). It depends on the number of texts and on ``MAUVE_SETTINGS``:
    compare scores only at equal sizes and settings.
    """
    real, generated = _as_rows("mauve_score", real, generated)
    if min(len(real), len(generated)) < 2:
        raise ValueError(f"mauve_score: need at least 2 rows per side, got {len(real)} and {len(generated)}")
    if not mauve_available():
        raise ModuleNotFoundError(
            "mauve_score needs the mauve-text package: pip install 'gan-rl[eval]' (or mauve-text)"
        )
    import mauve

    out = mauve.compute_mauve(
        p_features=real.astype(np.float32),
        q_features=generated.astype(np.float32),
        seed=seed,
        verbose=False,
        **MAUVE_SETTINGS,
    )
    return float(out.mauve)
