"""Comparison at matched diversity (gan_rl.eval.frontier): curves interpolated over the common range."""

from __future__ import annotations

import pytest

from gan_rl.eval.frontier import (
    common_range,
    comparable_models,
    frontier_at_diversity,
    matched_diversity,
)


def rows(model: str, points: list[tuple[float, float, float]]) -> dict[str, dict]:
    """``gan-rl evaluate`` rows of one run: (temperature, distinct-2, two-sample accuracy)."""
    return {
        f"{model}@{t:g}": {"model": model, "temperature": t, "distinct_2": x, "two_sample_acc": y}
        for t, x, y in points
    }


def test_lines_are_read_at_the_same_diversity():
    # a: y = x on [0.5, 0.9]; b: y = x + 0.1 on [0.6, 1.0]; common range [0.6, 0.9], mean x there 0.75.
    results = {
        "real": {"distinct_2": 0.8, "two_sample_acc": 0.5},  # no model/temperature: not a curve
        **rows("a", [(0.7, 0.5, 0.5), (1.0, 0.7, 0.7), (1.3, 0.9, 0.9)]),
        **rows("b", [(0.7, 0.6, 0.7), (1.3, 1.0, 1.1)]),
    }
    matched = matched_diversity(results, "two_sample_acc")
    assert matched.x_range == (0.6, 0.9)
    assert matched.values["a"] == [pytest.approx(0.75)]
    assert matched.values["b"] == [pytest.approx(0.85)]
    # Each at its best single temperature, a (0.5) and b (0.7) differ by 0.2; at matched diversity by 0.1.


def test_seeds_are_one_model_and_out_of_order_temperatures_are_sorted_by_diversity():
    results = {
        **rows("m-s0", [(1.3, 0.9, 0.6), (0.7, 0.5, 0.6)]),
        **rows("m-s1", [(0.7, 0.5, 0.7), (1.3, 0.9, 0.7)]),
    }
    matched = matched_diversity(results, "two_sample_acc")
    assert sorted(matched.values) == ["m"]
    mean, sd = matched.mean_sd("m")
    assert mean == pytest.approx(0.65) and sd == pytest.approx(0.0707, abs=1e-4)


def test_no_overlap_gives_no_range_and_single_points_are_named():
    results = {
        **rows("a", [(0.7, 0.1, 0.5), (1.0, 0.2, 0.5)]),
        **rows("b", [(0.7, 0.5, 0.5), (1.0, 0.6, 0.5)]),
    }
    assert matched_diversity(results, "two_sample_acc").x_range is None
    results.update(rows("c", [(1.0, 0.15, 0.5)]))
    matched = matched_diversity(results, "two_sample_acc", models=["a", "c"])
    assert matched.skipped == ["c"] and list(matched.values) == ["a"]
    assert common_range({}) is None


def test_a_model_apart_is_left_out_and_the_rest_compared():
    """This benchmark's seed-0 ranges (distinct-2 over T 0.7-1.3): spin-lr overlaps spin-sft only, so each
    model overlaps some other yet all six share no range; spin-lr, overlapping the fewest, is left out."""
    spans = {"ppo": (0.548, 0.684), "sft-more": (0.582, 0.694), "sft-star": (0.560, 0.686),
             "spin-lr": (0.699, 0.784), "spin": (0.541, 0.668), "spin-sft": (0.604, 0.724)}  # fmt: skip
    results = {}
    for model, (low, high) in spans.items():
        results.update(rows(f"{model}-s0", [(0.7, low, 0.7), (1.3, high, 0.6)]))
    assert matched_diversity(results, "two_sample_acc").x_range is None
    models, apart = comparable_models(results)
    assert models == ["ppo", "sft-more", "sft-star", "spin", "spin-sft"]
    assert apart == {"spin-lr": (0.699, 0.784)}
    assert matched_diversity(results, "two_sample_acc", models=models).x_range == (0.604, 0.668)
    # Seeds are one model: with a second seed of spin-lr spanning [0.55, 0.79] every model overlaps every
    # other, yet its first seed still shares nothing with spin's run: one model goes, the one whose leaving
    # opens the widest common range (spin-lr; leaving spin out would open none).
    results.update(rows("spin-lr-s1", [(0.7, 0.55, 0.7), (1.3, 0.79, 0.6)]))
    assert comparable_models(results)[1] == {"spin-lr": (0.55, 0.79)}
    # Runs that share a range already: nothing left out.
    assert comparable_models(rows("a-s0", [(0.7, 0.5, 0.5), (1.0, 0.7, 0.5)])) == (["a"], {})


def test_the_frontier_reads_every_model_at_its_closest_point_at_least_as_diverse():
    """a is U-shaped (closest at x = 0.6, further both sides); b is more diverse at every temperature and as
    close as a's best: the curves share no range (no matched reading), but b's frontier is lower than a's."""
    results = {
        **rows("a-s0", [(0.7, 0.5, 0.8), (1.0, 0.6, 0.6), (1.3, 0.7, 0.7)]),
        **rows("b-s0", [(0.7, 0.8, 0.65), (1.3, 0.9, 0.6)]),
    }
    assert matched_diversity(results, "two_sample_acc").x_range is None
    frontier = frontier_at_diversity(results, "two_sample_acc")
    # From a's least diverse point to the most diverse one both reach: 0.5 to 0.7.
    assert frontier.x_range == pytest.approx((0.5, 0.7))
    # b: 0.6 everywhere (its 0.9 point is at least any x). a: 0.6 up to x = 0.6, then its rising right arm,
    # 0.6 + (x - 0.6), never a point it was not sampled past: the grid's mean is 0.6 + 0.55 / 21.
    assert frontier.values["b"] == [pytest.approx(0.6)]
    assert frontier.values["a"] == [pytest.approx(0.6 + 0.55 / 21)]
    # A model sampled less diversely ends the range at its most diverse point; a single point is no curve.
    results.update(rows("c-s0", [(0.7, 0.45, 0.9), (1.3, 0.65, 0.5)]))
    results.update(rows("d-s0", [(1.0, 0.6, 0.5)]))
    frontier = frontier_at_diversity(results, "two_sample_acc")
    assert frontier.x_range == pytest.approx((0.45, 0.65)) and frontier.skipped == ["d-s0"]
    assert frontier.values["c"] == [pytest.approx(0.5)] and "d" not in frontier.values
