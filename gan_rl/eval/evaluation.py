"""Held-out evaluation on plain lists of texts: what ``gan-rl evaluate`` computes, without a recipe.

Real responses to held-out prompts on one side, each generator's responses to the same prompts (at one or
several sampling temperatures) on the other; every number comes from metrics no part of training sees
(:mod:`gan_rl.eval.metrics`). A reference row (other real responses, e.g. of the training split) gets the
same metrics, so each number comes with the value "as real as the data itself" would get. A domain judge,
trained on real texts of the target side and of a contrast side only, says on which side the generations
read.

With several temperatures a model is compared with another at its best one, as "Language GANs falling
short" (Caccia et al., ICLR 2020) showed a fair comparison needs: a tuned temperature alone moved plain MLE
past every text GAN of its time.

``gan-rl evaluate`` reads the held-out split from a recipe, samples the models and calls
:func:`evaluate_texts`; :func:`gan_rl.eval.report.save_evaluation` writes what it writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from gan_rl.eval.metrics import (
    MAUVE_SETTINGS,
    distinct_n,
    frechet_distance,
    judge_shift,
    length_stats,
    mauve_available,
    mauve_score,
    ngram_features,
    self_bleu,
    two_sample_accuracy,
    word_tokens,
)
from gan_rl.utils.fields import CheckedConfig

if TYPE_CHECKING:
    from gan_rl.eval.metrics import TextEncoder

REAL_LABEL = "real"  # the reference row: other real responses (gan-rl evaluate: of the training split)

# temperature (None: not recorded) -> one response per held-out prompt
Generations = dict[float | None, list[str]]


@dataclass
class EvaluationConfig(CheckedConfig):
    """The settings of :func:`evaluate_texts` (the metrics' part of a recipe's ``evaluate:`` section).

    Checked when built: a bad field is one :class:`gan_rl.errors.ConfigError` (a ``ValueError``) naming it,
    ``EvaluationConfig.folds: expected an integer >= 2, got 1.``
    """

    encoder: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={
            "help": "Sentence encoder (hub id or directory) for the embedding two-sample test, the Fréchet "
            "distance and MAUVE; loaded with sentence-transformers, pooled as the checkpoint says."
        },
    )
    folds: int = field(
        default=5, metadata={"help": "Cross-validation folds of the two-sample tests (at least 2)."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the classifiers' folds, subsampling, self-BLEU and MAUVE."}
    )
    mauve: bool = field(
        default=True,
        metadata={"help": "Compute MAUVE on the encoder's embeddings (the mauve-text package)."},
    )
    judge_samples: int = field(
        default=20000,
        metadata={"help": "Real training texts per side the domain judge learns from (at most)."},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run the encoder checkpoint's own code (for the encoder only)."}
    )
    device: str | None = field(
        default=None, metadata={"help": "Device of the encoder; default: cuda when available, else cpu."}
    )

    def validate(self) -> None:
        super().validate()  # each field against its type hint
        checks = [
            ("encoder", bool(self.encoder.strip()), "a checkpoint name"),
            ("folds", self.folds >= 2, "an integer >= 2"),
            ("judge_samples", self.judge_samples >= 2, "an integer >= 2"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}.")


class _FoldsAndSeed(Protocol):
    folds: int
    seed: int


def result_key(label: str, temperature: float | None, temperatures: Sequence[float | None]) -> str:
    """A results row's name: the model's label, with ``@T`` when several temperatures are compared."""
    return label if len(temperatures) == 1 else f"{label}@{temperature:g}"


def best_temperatures(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each model's best temperature: the lowest embedding two-sample accuracy (the closest to real in
    the encoder's space), ties to the higher MAUVE. ``{model: {"temperature": T, "row": key}}``."""
    best: dict[str, tuple[tuple[float, float], float, str]] = {}
    for key, row in results.items():
        model = row.get("model")
        if model is None:
            continue
        mauve = row.get("mauve")
        score = (row["two_sample_acc"], -(mauve if mauve is not None else 0.0))
        if model not in best or score < best[model][0]:
            best[model] = (score, row["temperature"], key)
    return {model: {"temperature": t, "row": key} for model, (_, t, key) in best.items()}


def text_metrics(texts: Sequence[str], seed: int) -> dict[str, Any]:
    """Diversity and length of one set of texts (generated or real)."""
    texts = list(texts)
    return {
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "self_bleu": self_bleu(texts, seed=seed),
        "mean_length": float(np.mean([len(word_tokens(t)) for t in texts])) if texts else 0.0,
        "lengths": [len(word_tokens(t)) for t in texts],
    }


def compare(
    real: Sequence[str], real_emb: np.ndarray, texts: Sequence[str], emb: np.ndarray, settings: _FoldsAndSeed
) -> dict[str, float]:
    """How far ``texts`` sit from the real responses: two-sample tests, Fréchet distance, lengths.

    ``settings``: anything with ``folds`` and ``seed`` (an :class:`EvaluationConfig`, the recipe's
    ``evaluate`` section), so a selection score and an evaluation score are one computation.
    """
    real_ng, gen_ng = ngram_features(list(real), list(texts))
    lengths = length_stats(list(texts), list(real))
    return {
        "two_sample_acc": two_sample_accuracy(real_emb, emb, folds=settings.folds, seed=settings.seed),
        "two_sample_acc_ngram": two_sample_accuracy(
            real_ng, gen_ng, folds=settings.folds, seed=settings.seed
        ),
        "frechet": frechet_distance(real_emb, emb),
        "length_wasserstein": lengths["wasserstein"],
        "length_ks": lengths["ks"],
    }


def _texts(name: str, texts: Any, at_least: int = 0, why: str = "") -> list[str]:
    """``texts`` as a list of strings, or one ValueError naming the argument (a None read as text would be
    scored as the response "None")."""
    if isinstance(texts, (str, bytes, Mapping)) or not isinstance(texts, Iterable):
        raise ValueError(f"{name}: expected a list of texts, got {type(texts).__name__}.")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{name}[{i}]: expected text, got {type(text).__name__} ({text!r:.40}).")
    if len(texts) < at_least:
        raise ValueError(f"{name}: expected at least {at_least} texts{why}, got {len(texts)}.")
    return texts


def _generations(generated: Any, folds: int) -> dict[str, Generations]:
    """``generated`` as {label: {temperature: texts}}: a plain list of texts counts as one set whose
    temperature is not recorded (None)."""
    if not isinstance(generated, Mapping) or not generated:
        raise ValueError("generated: expected a non-empty {label: texts} mapping.")
    why = " (EvaluationConfig.folds: the two-sample test's folds)"
    out: dict[str, Generations] = {}
    for label, value in generated.items():
        if not isinstance(label, str) or not label or label == REAL_LABEL:
            raise ValueError(
                f"generated: label {label!r} must be a non-empty text other than {REAL_LABEL!r}."
            )
        if isinstance(value, Mapping):
            out[label] = {}
            for t, texts in value.items():
                if not isinstance(t, (int, float)) or isinstance(t, bool) or not t > 0:
                    raise ValueError(f"generated[{label!r}]: temperature {t!r} is not a positive number.")
                out[label][float(t)] = _texts(f"generated[{label!r}][{t:g}]", texts, folds, why)
        else:
            out[label] = {None: _texts(f"generated[{label!r}]", value, folds, why)}
    if len({None in by_t for by_t in out.values()}) > 1:
        raise ValueError(
            "generated: give every model a list of texts, or every model a {temperature: texts} mapping."
        )
    return out


def _judge_facts(
    real: list[str],
    judge_target: Sequence[str] | None,
    contrast: Sequence[str] | None,
    contrast_test: Sequence[str] | None,
    config: EvaluationConfig,
) -> tuple[Any, dict[str, float]] | None:
    """The domain judge (target side vs ``contrast``, real texts only) and its check on real held-out
    texts of both sides (accuracy, mean P(target) of each side) when ``contrast_test`` is given."""
    if contrast is None:
        if judge_target is not None or contrast_test is not None:
            raise ValueError("contrast: judge_target and contrast_test need the contrast side's texts.")
        return None
    from gan_rl.eval.judge import SideJudge

    contrast = _texts("contrast", contrast, 2)
    target = _texts("judge_target", judge_target if judge_target is not None else [], 2, " (with contrast)")
    judge = SideJudge(target[: config.judge_samples], contrast[: config.judge_samples], config.seed)
    facts: dict[str, float] = {"judge_rows_per_side": float(judge.rows_per_side)}
    if contrast_test is not None:
        contrast_test = _texts("contrast_test", contrast_test, 1)
        facts.update(
            judge_accuracy=judge.accuracy(real, contrast_test),
            p_target_real=judge.prob_target(real),
            p_contrast_real=judge.prob_target(contrast_test),
        )
    return judge, facts


def evaluate_texts(
    real: Sequence[str],
    generated: Mapping[str, Sequence[str] | Mapping[float, Sequence[str]]],
    config: EvaluationConfig | None = None,
    *,
    reference: Sequence[str] | None = None,
    judge_target: Sequence[str] | None = None,
    contrast: Sequence[str] | None = None,
    contrast_test: Sequence[str] | None = None,
    encoder: TextEncoder | None = None,
) -> dict[str, Any]:
    """Every generator's responses against the ``real`` responses of the same held-out prompts.

    ``generated``: ``{label: texts}``, or ``{label: {temperature: texts}}`` to compare each model at its best
    temperature. ``reference``: other real responses (not ``real``), scored as row ``"real"``: the value a
    generator as real as the data would get. ``contrast`` (with ``judge_target``, real training texts of the
    target side): the domain judge's two sides; ``contrast_test``: real held-out texts of the contrast side,
    to check it. ``encoder``: a loaded :class:`~gan_rl.eval.metrics.TextEncoder` to reuse (else
    ``config.encoder`` is loaded; it names the encoder in the report either way).

    Returns what ``gan-rl evaluate`` writes to metrics.json less its command-line keys (``models``,
    ``seconds``, ``plots``): ``settings``, ``temperatures``, ``best_temperature``, ``mauve``,
    ``held_out_prompts``, ``test_real``, ``judge``, ``results`` (one row per model and temperature).
    """
    config = EvaluationConfig() if config is None else config
    if not isinstance(config, EvaluationConfig):
        raise ValueError(f"config: expected an EvaluationConfig, got {type(config).__name__}.")
    why = " (EvaluationConfig.folds: the two-sample test's folds)"
    real = _texts("real", real, config.folds, why)
    by_model = _generations(generated, config.folds)
    rows: dict[str, tuple[str | None, float | None, list[str]]] = {}
    if reference is not None:
        rows[REAL_LABEL] = (None, None, _texts("reference", reference, config.folds, why))
    temperatures = list(dict.fromkeys(t for by_t in by_model.values() for t in by_t))
    for label, by_t in by_model.items():
        for t, texts in by_t.items():
            rows[result_key(label, t, temperatures)] = (label, t, texts)
    if config.mauve and not mauve_available():
        raise ModuleNotFoundError(
            "EvaluationConfig.mauve: MAUVE needs the mauve-text package: pip install 'gan-rl[eval]', "
            "or set mauve=False."
        )
    judged = _judge_facts(real, judge_target, contrast, contrast_test, config)
    if encoder is None:
        encoder = _load_encoder(config)
    real_emb = encoder.encode(real)
    results = {key: _row(real, real_emb, *row, encoder, judged, config) for key, row in rows.items()}
    return {
        "settings": asdict(config),
        "temperatures": temperatures,
        "best_temperature": best_temperatures(results) if len(temperatures) > 1 else None,
        "mauve": (
            {"features": config.encoder, "texts_per_side": len(real), "seed": config.seed, **MAUVE_SETTINGS}
            if config.mauve
            else None
        ),
        "held_out_prompts": len(real),
        "test_real": text_metrics(real, config.seed),
        "judge": judged[1] if judged is not None else None,
        "results": results,
    }


def _load_encoder(config: EvaluationConfig) -> TextEncoder:
    import torch

    from gan_rl.eval.metrics import TextEncoder

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return TextEncoder(config.encoder, device=device, trust_remote_code=config.trust_remote_code)


def _row(
    real: list[str],
    real_emb: np.ndarray,
    label: str | None,
    temperature: float | None,
    texts: list[str],
    encoder: TextEncoder,
    judged: tuple[Any, dict[str, float]] | None,
    config: EvaluationConfig,
) -> dict[str, Any]:
    """One results row: the metrics of ``texts``, and for a model its label and temperature."""
    emb = encoder.encode(texts)
    row = {**text_metrics(texts, config.seed), **compare(real, real_emb, texts, emb, config)}
    if config.mauve:
        row["mauve"] = mauve_score(real_emb, emb, seed=config.seed)
    if label is not None:
        row.update(model=label, temperature=temperature)
    if judged is not None:
        judge, facts = judged
        row["judge_prob_target"] = judge.prob_target(texts)
        if "p_target_real" in facts:
            row["judge_shift"] = judge_shift(
                row["judge_prob_target"], facts["p_target_real"], facts["p_contrast_real"]
            )
    return row
