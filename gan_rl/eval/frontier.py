"""Comparing generators at matched diversity: each model's quality read off its temperature curve at the
same diversity as every other's.

A sampling temperature trades closeness to the real responses for diversity, so two models compared at one
temperature each (even each at its best) can differ only in where they sit on the same trade-off.
"Language GANs falling short" (Caccia et al., ICLR 2020) compares generators over a temperature sweep
instead: a model is ahead if it is closer at equal diversity, or more diverse at equal closeness.

:func:`matched_diversity` does that for the rows of ``gan-rl evaluate`` at several temperatures: each run's
points (diversity ``x``, distance ``y``; one per temperature) are joined into a piecewise-linear curve in
order of ``x``; the range of ``x`` that every run's curve spans is the common range; each curve is
interpolated on an even grid of that range and averaged, giving one number per run (its mean distance over
the common diversities); runs named ``NAME-sSEED`` are seeds of one model, reported as mean ± sd.

The matched reading compares models only where all their curves overlap: a model sampled far more diversely
than the rest is read at its least diverse point, or not at all. :func:`frontier_at_diversity` reads the
frontier instead: at each diversity ``x``, a run's closest point among those at least ``x`` diverse (the
temperature a user wanting that much diversity would pick), averaged over ``x`` from the least diverse point
of any run to the most diverse one every run reaches. No model is left out, and nothing is extrapolated past
a curve's most diverse point; a model whose frontier is lower is ahead in both of the senses above.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEED_SUFFIX = re.compile(r"-s\d+$")


@dataclass
class MatchedDiversity:
    """Each model's mean ``ykey`` over a diversity range (:func:`matched_diversity`: the range all runs share,
    ``None`` when they share none; :func:`frontier_at_diversity`: its frontier's range)."""

    xkey: str
    ykey: str
    x_range: tuple[float, float] | None
    # model -> per-seed values (one per run named NAME-sSEED, or one for a run without a seed suffix)
    values: dict[str, list[float]] = field(default_factory=dict)
    # runs whose curve has fewer than two temperatures (no curve to interpolate): left out, named here
    skipped: list[str] = field(default_factory=list)

    def mean_sd(self, model: str) -> tuple[float, float]:
        """(mean, sd over seeds; 0 for one seed) of ``model``'s value."""
        vals = self.values[model]
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "xkey": self.xkey,
            "ykey": self.ykey,
            "x_range": list(self.x_range) if self.x_range else None,
            "models": {
                m: {"mean": self.mean_sd(m)[0], "sd": self.mean_sd(m)[1], "values": v}
                for m, v in self.values.items()
            },
            "skipped": self.skipped,
        }


def run_curves(
    results: dict[str, dict[str, Any]], xkey: str, ykey: str, models: list[str] | None = None
) -> dict[str, list[tuple[float, float]]]:
    """Each run's (x, y) points over its temperatures, sorted by x: from ``gan-rl evaluate``'s rows, which
    carry ``model`` and ``temperature`` (rows without them, such as the real reference, are left out).
    ``models``: only the runs of these models (names without the ``-sSEED`` suffix)."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in results.values():
        model, x, y = row.get("model"), row.get(xkey), row.get(ykey)
        if model is None or row.get("temperature") is None or x is None or y is None:
            continue
        if models is not None and SEED_SUFFIX.sub("", str(model)) not in models:
            continue
        curves.setdefault(str(model), []).append((float(x), float(y)))
    return {m: sorted(points) for m, points in curves.items()}


def common_range(curves: dict[str, list[tuple[float, float]]]) -> tuple[float, float] | None:
    """The range of x inside every curve, or None when two curves do not overlap."""
    if not curves:
        return None
    low = max(points[0][0] for points in curves.values())
    high = min(points[-1][0] for points in curves.values())
    return (low, high) if low < high else None


def comparable_models(
    results: dict[str, dict[str, Any]], xkey: str = "distinct_2", ykey: str = "two_sample_acc"
) -> tuple[list[str], dict[str, tuple[float, float]]]:
    """The models whose runs share a range of ``xkey`` (what :func:`matched_diversity` compares), and
    those left out with their range (min, max over their runs).

    One model sampled far more (or less) diversely than the rest at every temperature would leave the
    others no range in common, and no comparison at all. So while the runs share no range, the model whose
    runs overlap the fewest other models' is left out (ties: the one whose leaving widens the common range
    most, then the name): a model is left out only where it stands apart, never because of the order
    the runs came in.
    """
    curves = run_curves(results, xkey, ykey)
    ranges = {run: (points[0][0], points[-1][0]) for run, points in curves.items()}
    model_of = {run: SEED_SUFFIX.sub("", run) for run in ranges}
    kept = set(model_of.values())

    def runs_of(models: set[str]) -> list[tuple[float, float]]:
        return [r for run, r in ranges.items() if model_of[run] in models]

    def width(models: set[str]) -> float:
        spans = runs_of(models)
        return min(hi for _, hi in spans) - max(lo for lo, _ in spans) if spans else 0.0

    def overlapped(model: str) -> int:
        mine = runs_of({model})
        return sum(
            any(lo <= high and low <= hi for lo, hi in mine for low, high in runs_of({other}))
            for other in kept - {model}
        )

    apart: dict[str, tuple[float, float]] = {}
    while len(kept) > 1 and width(kept) <= 0:
        out = min(sorted(kept), key=lambda m: (overlapped(m), -width(kept - {m})))
        spans = runs_of({out})
        apart[out] = (min(lo for lo, _ in spans), max(hi for _, hi in spans))
        kept.remove(out)
    return sorted(kept), apart


def matched_diversity(
    results: dict[str, dict[str, Any]],
    ykey: str,
    xkey: str = "distinct_2",
    grid: int = 21,
    models: list[str] | None = None,
) -> MatchedDiversity:
    """Each model's mean ``ykey`` at matched ``xkey`` over the range that every run spans (see the module).

    ``models``: compare only the runs of these models (names without the ``-sSEED`` suffix); the common
    range is that of the runs compared, so adding a model can narrow it.
    """
    return _mean_over_grid(results, xkey, ykey, grid, models, common_range, np.interp)


def frontier_at_diversity(
    results: dict[str, dict[str, Any]], ykey: str, xkey: str = "distinct_2"
) -> MatchedDiversity:
    """Each model's mean frontier: at each ``x`` of an even grid, the least ``ykey`` on its run's curve
    where ``xkey`` is at least ``x`` (see the module), averaged over ``x`` from the lowest ``xkey`` of any
    run to the highest that every run reaches. Every run is read; seeds as in :func:`matched_diversity`."""

    def span(curves: dict[str, list[tuple[float, float]]]) -> tuple[float, float]:
        return min(pts[0][0] for pts in curves.values()), min(pts[-1][0] for pts in curves.values())

    def least_beyond(xs: np.ndarray, px: np.ndarray, py: np.ndarray) -> list[float]:
        # A piecewise-linear curve's least value over [x, its end] lies at x itself or at a point past it.
        return [min([*py[px >= x], *([np.interp(x, px, py)] if x >= px[0] else [])]) for x in xs]

    return _mean_over_grid(results, xkey, ykey, 21, None, span, least_beyond)


def _mean_over_grid(
    results: dict[str, dict[str, Any]],
    xkey: str,
    ykey: str,
    grid: int,
    models: list[str] | None,
    span_of: Callable[[dict[str, list[tuple[float, float]]]], tuple[float, float] | None],
    read: Callable[[np.ndarray, np.ndarray, np.ndarray], Any],
) -> MatchedDiversity:
    """Each run's curve ``read`` at an even grid of ``span_of(curves)`` (x, then the curve's x and y) and
    averaged; one value per run, grouped by model."""
    curves, skipped = _curves(results, xkey, ykey, models)
    span = span_of(curves) if curves else None
    means = MatchedDiversity(xkey, ykey, span, skipped=skipped)
    if span is None:
        return means
    xs = np.linspace(span[0], span[1], grid)
    for run, points in sorted(curves.items()):
        px, py = (np.array(v) for v in zip(*points, strict=True))
        means.values.setdefault(SEED_SUFFIX.sub("", run), []).append(float(np.mean(read(xs, px, py))))
    return means


def _curves(
    results: dict[str, dict[str, Any]], xkey: str, ykey: str, models: list[str] | None
) -> tuple[dict[str, list[tuple[float, float]]], list[str]]:
    """The runs' curves with equal x merged, and the runs left out for having fewer than two x (no curve)."""
    curves = {run: _unique_x(pts) for run, pts in run_curves(results, xkey, ykey, models).items()}
    skipped = sorted(run for run, pts in curves.items() if len(pts) < 2)
    return {run: pts for run, pts in curves.items() if run not in skipped}, skipped


def _unique_x(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points sorted by x with equal x merged (their y averaged): np.interp needs increasing x."""
    merged: dict[float, list[float]] = {}
    for x, y in points:
        merged.setdefault(x, []).append(y)
    return [(x, statistics.fmean(ys)) for x, ys in sorted(merged.items())]
