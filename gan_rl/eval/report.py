"""The evaluation's files: metrics.json, the plots and report.md, from what
:func:`gan_rl.eval.evaluation.evaluate_texts` returns (``gan-rl evaluate`` writes them the same way)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gan_rl.eval.evaluation import REAL_LABEL, result_key

METRICS_FILE, REPORT_FILE = "metrics.json", "report.md"

# (results key, column title, how to read it): the report's table and the terminal's.
COLUMNS = [
    ("two_sample_acc", "two-sample acc (emb.)", "0.5 = indistinguishable"),
    ("two_sample_acc_ngram", "two-sample acc (n-gram)", "0.5 = indistinguishable"),
    ("mauve", "MAUVE", "1 = same distribution"),
    ("frechet", "Fréchet dist.", "lower = closer"),
    ("distinct_1", "distinct-1", "real's value"),
    ("distinct_2", "distinct-2", "real's value"),
    ("self_bleu", "self-BLEU", "real's value; higher = less diverse"),
    ("mean_length", "mean length", "words"),
    ("length_wasserstein", "length W1", "lower = closer"),
    ("judge_prob_target", "judge P(target)", "real target's value"),
    ("judge_shift", "judge shift", "0 = contrast side, 1 = target side"),
]

# Texts of one model: {temperature: texts}, or the texts alone (temperature not recorded).
ModelTexts = Mapping[float | None, Sequence[str]] | Sequence[str]


def format_value(value: Any) -> str:
    """A table cell: floats to 3 decimals, a missing or nan value as ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def json_default(value: Any) -> Any:
    """numpy scalars as JSON numbers (``json.dumps(..., default=json_default)``)."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_evaluation(
    report: dict[str, Any],
    out_dir: str | Path,
    reals: Sequence[str],
    generated: Mapping[str, ModelTexts],
    prompts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write ``report`` to ``out_dir``: metrics.json, the plots (``report["plots"]`` lists them) and report.md
    with five samples of ``prompts``, ``reals`` and each model's ``generated`` texts. Returns ``report``.

    metrics.json is written before the plots too, so a failed plot leaves the numbers on disk.
    """
    from gan_rl.eval.plots import plot_evaluation, plot_frontier

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps(report, indent=2, default=json_default))
    report["plots"] = [str(p) for p in plot_evaluation(report["results"], out)]
    if len(report["temperatures"]) > 1:
        report["plots"] += [str(p) for p in plot_frontier(report["results"], out)]
    (out / REPORT_FILE).write_text(markdown_report(report, prompts, reals, generated))
    (out / METRICS_FILE).write_text(json.dumps(report, indent=2, default=json_default))
    return report


def _header(report: Mapping[str, Any]) -> str:
    """The report's first paragraph: what was sampled (when the settings say: ``gan-rl evaluate``'s),
    which encoder, what row ``real`` is."""
    settings = report["settings"]
    n = report["held_out_prompts"]
    if {"top_p", "max_new_tokens", "temperature"} <= set(settings):
        temperatures = report.get("temperatures") or [settings["temperature"]]
        sampled_at = (
            f"temperature {temperatures[0]:g}"
            if len(temperatures) == 1
            else f"at each of the temperatures {', '.join(f'{t:g}' for t in temperatures)} (row MODEL@T)"
        )
        sampled = (
            f"{n} held-out prompts, one sampled response each ({sampled_at}, top-p {settings['top_p']}, "
            f"at most {settings['max_new_tokens']} new tokens)"
        )
        reference = "real responses of the training split"
    else:
        sampled = f"{n} real responses and each model's responses"
        if report.get("temperatures", [None]) != [None]:
            sampled += f" at the temperatures {', '.join(f'{t:g}' for t in report['temperatures'])}"
        reference = "other real responses"
    text = (
        f"{sampled}; sentence encoder `{settings['encoder']}`. Every metric compares with the real held-out "
        "responses."
    )
    if REAL_LABEL in report["results"]:
        text += f" Row `{REAL_LABEL}`: {reference}, the value a generator as real as the data would get."
    return text


def _table(report: Mapping[str, Any], columns: list[tuple[str, str, str]]) -> list[str]:
    results = report["results"]
    lines = [
        "| model | " + " | ".join(c[1] for c in columns) + " |",
        "| --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for label, row in results.items():
        lines.append(f"| {label} | " + " | ".join(format_value(row.get(c[0])) for c in columns) + " |")
    lines += ["", "Reading: " + "; ".join(f"{c[1]}: {c[2]}" for c in columns) + "."]
    if report.get("best_temperature"):
        lines += [
            "",
            "## At each model's best temperature",
            "",
            "Best: the lowest embedding two-sample accuracy of the model's temperatures (ties: the higher "
            "MAUVE). The quality-diversity plot draws every temperature.",
            "",
            "| model | temperature | " + " | ".join(c[1] for c in columns) + " |",
            "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |",
        ]
        for model, best in report["best_temperature"].items():
            row = results[best["row"]]
            cells = " | ".join(format_value(row.get(c[0])) for c in columns)
            lines.append(f"| {model} | {best['temperature']:g} | {cells} |")
    return lines


def _notes(report: Mapping[str, Any]) -> list[str]:
    """MAUVE's settings, the domain judge's check, the plots."""
    lines: list[str] = []
    if report.get("mauve"):
        m = report["mauve"]
        lines += [
            "",
            f"MAUVE: mauve-text on the `{m['features']}` embeddings, {m['texts_per_side']} texts per side, "
            f"k-means buckets {m['num_buckets']} (n/10), scaling factor {m['mauve_scaling_factor']}, "
            f"seed {m['seed']}. The score depends on the number of texts and these settings: compare it "
            "only with scores of equal sample size and settings.",
        ]
    if report.get("judge"):
        j = report["judge"]
        held_out = (
            f": held-out accuracy {j['judge_accuracy']:.3f}; mean P(target) of real target posts "
            f"{j['p_target_real']:.3f}, of real contrast posts {j['p_contrast_real']:.3f}"
            if "judge_accuracy" in j
            else " (no contrast test split: its accuracy is unknown)"
        )
        rows = int(j.get("judge_rows_per_side", 0))
        lines += [
            "",
            f"Domain judge (logistic regression on word 1-2-grams, trained on {rows} real training responses "
            f"per side){held_out}.",
        ]
    for plot in report.get("plots", []):
        lines += ["", f"![{Path(plot).stem}]({Path(plot).name})"]
    return lines


def _samples(
    report: Mapping[str, Any],
    prompts: Sequence[str] | None,
    reals: Sequence[str],
    generated: Mapping[str, ModelTexts],
) -> list[str]:
    """The first five held-out examples: prompt (when known), real response, every model's response."""
    temperatures = report.get("temperatures") or [None]
    by_model = {
        label: texts if isinstance(texts, Mapping) else {None: texts} for label, texts in generated.items()
    }
    lines = ["", "## Samples", ""]
    for i in range(min(5, len(reals))):
        lines += [f"**prompt** {prompts[i]}" if prompts is not None else f"**sample {i + 1}**", ""]
        lines.append(f"- real: {reals[i]}")
        lines += [
            f"- {result_key(label, t, temperatures)}: {texts[i]}"
            for label, by_temperature in by_model.items()
            for t, texts in by_temperature.items()
            if i < len(texts)
        ]
        lines.append("")
    return lines


def markdown_report(
    report: Mapping[str, Any],
    prompts: Sequence[str] | None,
    reals: Sequence[str],
    generated: Mapping[str, ModelTexts],
) -> str:
    """report.md: one table row per model (and temperature), the best temperatures, how to read each
    column, MAUVE's settings, the domain judge's check, the plots and five samples."""
    results = report["results"]
    columns = [c for c in COLUMNS if any(c[0] in r for r in results.values())]
    lines = ["# gan-rl evaluation", "", _header(report), ""]
    lines += _table(report, columns) + _notes(report) + _samples(report, prompts, reals, generated)
    return "\n".join(lines) + "\n"
