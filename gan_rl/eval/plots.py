"""PNG plots of a run's training curves and of an evaluation, readable without tensorboard.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global state), so it is safe on headless
machines and inside a training process. Panels whose metrics are absent are left out, and None/NaN values
are skipped, so partial logs (beta=0: no KL; no SFT mixing: no ``sft/loss``) still give a clean figure.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gan_rl.eval.frontier import SEED_SUFFIX, common_range, run_curves

TRAINING_FILE = "training_curves.png"
EVAL_METRICS_FILE = "evaluation_metrics.png"
EVAL_LENGTHS_FILE = "evaluation_lengths.png"
REAL = "real"
# The score of selection by samples at each evaluation (gan_rl.eval.sample_selection.METRIC, written out
# so that plotting does not import the training side).
SAMPLE_SELECTION_KEY = "sample_select/two_sample_ngram"

# (metric key, title, fixed reference line or None). Order = panel order.
EVAL_METRICS: list[tuple[str, str, float | None]] = [
    ("two_sample_acc", "two-sample accuracy (0.5 = indistinguishable)", 0.5),
    ("two_sample_acc_ngram", "two-sample accuracy, n-gram (0.5 ideal)", 0.5),
    ("mauve", "MAUVE to real (1 = same distribution)", None),
    ("frechet", "Fréchet distance to real (lower is better)", None),
    ("length_wasserstein", "length Wasserstein to real (lower is better)", None),
    ("distinct_1", "distinct-1", None),
    ("distinct_2", "distinct-2", None),
    ("self_bleu", "self-BLEU (lower = more diverse)", None),
    ("judge_prob_target", "judge P(target)", None),
    ("judge_shift", "judge shift", 0.0),
]


def _num(value: Any) -> float | None:
    """A finite float, or None for missing/None/NaN/inf/non-numeric values (which are skipped)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _series(log_history: Iterable[dict], key: str) -> dict[float, float]:
    """``step -> value`` for one metric; entries without a step or a usable value are ignored."""
    out: dict[float, float] = {}
    for entry in log_history:
        step, value = _num(entry.get("step")), _num(entry.get(key))
        if step is not None and value is not None:
            out[step] = value
    return out


def _band(
    ax: Axes, line: dict[float, float], low: dict[float, float], high: dict[float, float], color
) -> None:
    steps = [s for s in line if s in low and s in high]
    if steps:
        ax.fill_between(steps, [low[s] for s in steps], [high[s] for s in steps], color=color, alpha=0.2)


def _plot(ax: Axes, series: dict[float, float], label: str | None = None, **kw) -> None:
    ax.plot(list(series), list(series.values()), label=label, marker="." if len(series) < 30 else None, **kw)


def _grid(n: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A figure with exactly ``n`` panels (no empty ones), up to three per row."""
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]


def plot_training_curves(log_history: list[dict], out_dir: str | Path) -> list[Path]:
    """Plot trainer.state.log_history (TRL + discriminator callback) to ``training_curves.png``.

    Returns the files written: an empty list (and no file) when the history holds nothing to plot.
    """
    panels = TrainingPanels(log_history).present()
    if not panels:
        return []
    fig, axes = _grid(len(panels), 4.5, 3.2)
    boundaries = _iteration_ends(log_history)
    for ax, draw in zip(axes, panels, strict=True):
        draw(ax)
        for boundary in boundaries:
            ax.axvline(boundary, ls=":", color="grey", lw=1)
        ax.set_xlabel("step (dotted: end of a SPIN iteration)" if boundaries else "step")
        ax.grid(alpha=0.3)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / TRAINING_FILE, dpi=100)
    return [out / TRAINING_FILE]


def _iteration_ends(log_history: list[dict]) -> list[float]:
    """gan-rl spin: the step where each iteration but the last ended (its steps restart; the curves count
    the run's steps)."""
    ends: dict[int, float] = {}
    for entry in log_history:
        iteration, step = entry.get("iteration"), _num(entry.get("step"))
        if isinstance(iteration, int) and step is not None:
            ends[iteration] = max(ends.get(iteration, step), step)
    return sorted(ends.values())[:-1]


class TrainingPanels:
    """The panels of ``training_curves.png``, one method each; :meth:`present` lists those whose metrics
    the log holds, in panel order (one figure layout for ppo / reinforce / gumbel, sft and spin)."""

    ACC_KEYS = (("disc/acc_real", "real"), ("disc/acc_generated", "generated"), ("disc/accuracy", "mean"))

    def __init__(self, log_history: list[dict]) -> None:
        self.log_history = log_history
        self.cache: dict[str, dict[float, float]] = {}
        self.dpo = bool(self.get("rewards/margins"))
        self.reward_key = "reward" if self.get("reward") else "rewards/discriminator/mean"
        self.std_key = "reward_std" if self.reward_key == "reward" else "rewards/discriminator/std"

    def get(self, key: str) -> dict[float, float]:
        if key not in self.cache:
            self.cache[key] = _series(self.log_history, key)
        return self.cache[key]

    def present(self) -> list[Any]:
        get = self.get
        panels = [
            (bool(get("eval_loss")) or (not get(self.reward_key) and bool(get("loss"))), self.nll),
            (bool(get(self.reward_key)), self.reward),
            (self.dpo, self.dpo_rewards),
            (bool(get("disc/loss")), self.simple("disc/loss", "discriminator loss")),
            (any(get(k) for k, _ in self.ACC_KEYS), self.disc_acc),
            (
                bool(get("disc/prob_generated_real")),
                self.simple("disc/prob_generated_real", "disc. P(real) on generated"),
            ),
            (bool(get("kl")), self.simple("kl", "KL to reference")),
            (bool(get("completions/mean_length")), self.length),
            (bool(get("entropy")), self.simple("entropy", "policy entropy")),
            (bool(get("sft/loss")), self.simple("sft/loss", "SFT loss")),
            (bool(get(SAMPLE_SELECTION_KEY)), self.by_samples),
        ]
        return [draw for shown, draw in panels if shown]

    def reward(self, ax: Axes) -> None:
        r, std = self.get(self.reward_key), self.get(self.std_key)
        _plot(ax, r, color="C0")
        _band(
            ax, r, {k: r[k] - std[k] for k in std if k in r}, {k: r[k] + std[k] for k in std if k in r}, "C0"
        )
        ax.set_title("reward (± std)" if std else "reward")

    def disc_acc(self, ax: Axes) -> None:
        for i, (key, label) in enumerate(self.ACC_KEYS):
            if self.get(key):
                _plot(ax, self.get(key), label=label, color=f"C{i}")
        ax.axhline(0.5, ls="--", color="grey", lw=1)
        skipped = [step for step, v in self.get("disc/skipped").items() if v >= 0.5]
        for i, step in enumerate(skipped):
            ax.axvline(step, color="red", alpha=0.3, lw=1, label="round skipped" if i == 0 else None)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("discriminator accuracy")
        ax.legend(fontsize=8)

    def length(self, ax: Axes) -> None:
        mean, low = self.get("completions/mean_length"), self.get("completions/min_length")
        _plot(ax, mean, color="C0")
        _band(ax, mean, low, self.get("completions/max_length"), "C0")
        ax.set_title("completion length (mean, min-max)" if low else "completion length")

    def nll(self, ax: Axes) -> None:  # gan-rl sft: training loss, validation loss and its best step
        if self.get("loss"):
            _plot(ax, self.get("loss"), label="train", color="C0")
        validation = self.get("eval_loss")
        if validation:
            _plot(ax, validation, label="validation", color="C1")
            best = min(validation, key=validation.get)
            ax.axvline(best, ls="--", color="C1", lw=1, label=f"best (step {best:g})")
        # gan-rl spin: the DPO loss of (real response, own sample) pairs, not an NLL.
        ax.set_title("DPO loss (real vs own sample)" if self.dpo else "loss (NLL of real responses)")
        ax.legend(fontsize=8)

    def dpo_rewards(self, ax: Axes) -> None:  # gan-rl spin: the implicit discriminator, beta x log-ratio
        for i, (key, label) in enumerate((("rewards/chosen", "real"), ("rewards/rejected", "own sample"))):
            if self.get(key):
                _plot(ax, self.get(key), label=label, color=f"C{i}")
        ax.axhline(0.0, ls="--", color="grey", lw=1)
        accuracy = self.get("rewards/accuracies")
        if accuracy:
            twin = ax.twinx()
            _plot(twin, accuracy, label="real ranked first", color="C2", alpha=0.6)
            twin.set_ylim(-0.02, 1.02)
            twin.legend(fontsize=8, loc="lower right")
        ax.set_title("DPO rewards (log-ratio to the iteration's start)")
        ax.legend(fontsize=8, loc="upper left")

    def by_samples(self, ax: Axes) -> None:  # selection by samples (gan_rl/eval/sample_selection.py)
        curve = self.get(SAMPLE_SELECTION_KEY)
        _plot(ax, curve, label="two-sample acc., n-gram", color="C0")
        ax.axhline(0.5, ls="--", color="grey", lw=1, label="chance (indistinguishable)")
        best = min(curve, key=curve.get)  # the first of equal scores, as the callback selects
        ax.axvline(best, ls="--", color="C3", lw=1, label=f"selected (step {best:g}: {curve[best]:.3f})")
        ax.set_title("samples vs real responses (lower = closer)")
        ax.legend(fontsize=8)

    def simple(self, key: str, title: str) -> Any:
        def draw(ax: Axes) -> None:
            _plot(ax, self.get(key), color="C0")
            ax.set_title(title)

        return draw


def plot_evaluation(results: dict[str, dict], out_dir: str | Path) -> list[Path]:
    """Bar charts of evaluation metrics per model (real as dashed reference) and a length histogram."""
    models = [m for m in results if m != REAL]
    colors = {m: f"C{i % 10}" for i, m in enumerate(models)}
    real = results.get(REAL) or {}
    out = Path(out_dir)
    written: list[Path] = []

    metrics = [
        (k, t, r) for k, t, r in EVAL_METRICS if any(_num(results[m].get(k)) is not None for m in models)
    ]
    if metrics:
        fig, axes = _grid(len(metrics), 4.2, 3.2)
        for ax, (key, title, ref) in zip(axes, metrics, strict=True):
            for x, m in enumerate(models):
                value = _num(results[m].get(key))
                if value is None:  # missing, not zero
                    ax.annotate("n/a", (x, 0), ha="center", va="bottom", fontsize=8, color="grey")
                else:
                    bars = ax.bar(x, value, color=colors[m], width=0.6)
                    ax.bar_label(bars, fmt="%.3g", fontsize=8)
            if ref is not None:
                ax.axhline(ref, ls="--", color="grey", lw=1, label="chance" if ref == 0.5 else None)
            if _num(real.get(key)) is not None:
                ax.axhline(_num(real.get(key)), ls="--", color="black", lw=1.2, label="real")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
            ax.set_xticks(range(len(models)), models, rotation=20 if len(models) > 4 else 0)
            ax.set_xlim(-0.6, len(models) - 0.4)
            ax.margins(y=0.15)
            ax.set_title(title, fontsize=10)
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / EVAL_METRICS_FILE, dpi=100)
        written.append(out / EVAL_METRICS_FILE)

    lengths = {m: [v for v in (results[m].get("lengths") or []) if _num(v) is not None] for m in results}
    lengths = {m: v for m, v in lengths.items() if v}
    if lengths:
        bins = np.histogram_bin_edges(
            np.concatenate([np.asarray(v, float) for v in lengths.values()]), bins="auto"
        )
        if len(bins) > 41:
            bins = np.linspace(bins[0], bins[-1], 41)
        fig, (ax,) = _grid(1, 7, 4)
        for m, v in lengths.items():
            style = {"color": "black", "ls": "--", "lw": 2} if m == REAL else {"color": colors[m], "lw": 1.5}
            ax.hist(v, bins=bins, density=True, histtype="step", label=f"{m} (n={len(v)})", **style)
        ax.set(xlabel="response length (words)", ylabel="density", title="generation lengths")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / EVAL_LENGTHS_FILE, dpi=100)
        written.append(out / EVAL_LENGTHS_FILE)
    return written


FRONTIER_FILE = "quality_diversity.png"
# (distance key, its label), (diversity key, its label): one panel per pair that has values.
FRONTIER_AXES = [
    (
        ("two_sample_acc", "two-sample acc., emb. (lower = closer)"),
        ("distinct_2", "distinct-2 (higher = more diverse)"),
    ),
    (
        ("two_sample_acc_ngram", "two-sample acc., n-gram (lower = closer)"),
        ("distinct_2", "distinct-2 (higher = more diverse)"),
    ),
    (("mauve", "MAUVE (higher = closer)"), ("distinct_2", "distinct-2 (higher = more diverse)")),
    (
        ("two_sample_acc", "two-sample acc., emb. (lower = closer)"),
        ("self_bleu", "self-BLEU (lower = more diverse)"),
    ),
    (("mauve", "MAUVE (higher = closer)"), ("self_bleu", "self-BLEU (lower = more diverse)")),
]


def frontier_curves(
    results: dict[str, dict], xkey: str, ykey: str
) -> dict[str, list[tuple[float, float, float, float, float, int]]]:
    """One curve per model for the frontier plot: (temperature, x mean, x sd, y mean, y sd, seeds) in
    temperature order. Models named ``NAME-sSEED`` (one run per seed) are one curve, ``NAME``, through the
    mean over seeds at each temperature; the sd is 0 for a single seed."""
    groups: dict[str, dict[float, list[tuple[float, float]]]] = {}
    for row in results.values():
        model, t = row.get("model"), _num(row.get("temperature"))
        x, y = _num(row.get(xkey)), _num(row.get(ykey))
        if model is None or t is None or x is None or y is None:
            continue
        groups.setdefault(SEED_SUFFIX.sub("", model), {}).setdefault(t, []).append((x, y))
    curves = {}
    for name, by_t in groups.items():
        curves[name] = [
            (t, float(np.mean(xs)), float(np.std(xs)), float(np.mean(ys)), float(np.std(ys)), len(xs))
            for t, points in sorted(by_t.items())
            for xs, ys in [tuple(zip(*points, strict=True))]
        ]
    return curves


def plot_frontier(
    results: dict[str, dict],
    out_dir: str | Path,
    floors: dict[str, float] | None = None,
    models: list[str] | None = None,
) -> list[Path]:
    """The quality-diversity plot of an evaluation at several temperatures: for each model a curve through
    its temperatures (distance to the real responses against diversity), the real reference as a star.

    Rows carry ``model`` and ``temperature`` (``gan-rl evaluate`` with ``evaluate.temperatures``); a
    model is better than another where its curve passes closer to the star. The seeds of a model
    (``NAME-sSEED``) are one curve through their means, with bars of one sd (:func:`frontier_curves`).
    ``floors``: a distance's noise floor (its value for two samples of the real responses), drawn as a
    dotted line in its panels. Panels over distinct-2 shade the range every run spans, where
    :func:`gan_rl.eval.frontier.matched_diversity` compares them; ``models``: the range of these models'
    runs only (those ``matched_diversity`` is given, e.g. :func:`gan_rl.eval.frontier.comparable_models`).
    """
    fig = frontier_figure(results, floors, models)
    if fig is None:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / FRONTIER_FILE, dpi=100)
    return [out / FRONTIER_FILE]


def frontier_figure(
    results: dict[str, dict], floors: dict[str, float] | None = None, models: list[str] | None = None
) -> Figure | None:
    """:func:`plot_frontier`'s figure, not saved (None: no panel has values)."""
    real = results.get(REAL) or {}
    panels = [(y, x) for y, x in FRONTIER_AXES if frontier_curves(results, x[0], y[0])]
    if not panels:
        return None
    fig, axes = _grid(len(panels), 4.8, 3.8)
    for ax, ((ykey, ylabel), (xkey, xlabel)) in zip(axes, panels, strict=True):
        for i, (name, points) in enumerate(frontier_curves(results, xkey, ykey).items()):
            seeds = max(p[5] for p in points)
            label = f"{name} ({seeds} seeds)" if seeds > 1 else name
            xs, xsd, ys, ysd = ([p[k] for p in points] for k in (1, 2, 3, 4))
            style = {"color": f"C{i % 10}", "linestyle": ("-", "--", ":")[(i // 10) % 3]}
            ax.errorbar(xs, ys, xerr=xsd if seeds > 1 else None, yerr=ysd if seeds > 1 else None,
                        marker="o", capsize=2, label=label, **style)  # fmt: skip
            for t, x, _, y, _, _ in points:
                ax.annotate(f"{t:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        if _num(real.get(xkey)) is not None and _num(real.get(ykey)) is not None:
            ax.scatter([real[xkey]], [real[ykey]], marker="*", s=150, color="black", label="real", zorder=3)
        if floors and _num(floors.get(ykey)) is not None:
            ax.axhline(floors[ykey], ls=":", color="black", lw=1, label="noise floor (real vs real)")
        span = common_range(run_curves(results, xkey, ykey, models)) if xkey == "distinct_2" else None
        if span is not None:
            ax.axvspan(*span, color="grey", alpha=0.12, lw=0, label="matched range")
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("quality against diversity, one point per sampling temperature", fontsize=10)
    return fig
