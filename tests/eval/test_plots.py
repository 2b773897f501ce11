"""The PNG plots: files appear, are readable images, and partial or dirty inputs do not crash."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.image import imread

from gan_rl.eval.plots import plot_evaluation, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100


def _log_history(steps: int = 12) -> list[dict]:
    """What transformers' ``trainer.state.log_history`` looks like after a GRPO run with our callback."""
    history: list[dict] = [
        {"disc/warmup_loss": 0.69, "disc/warmup_acc_real": 0.5, "disc/warmup_accuracy": 0.5, "step": 0}
    ]
    for step in range(1, steps + 1):
        entry = {
            "loss": 0.01 * step,
            "grad_norm": 0.5,
            "learning_rate": 1e-6,
            "num_tokens": 1000.0 * step,
            "completions/mean_length": 30.0 + step,
            "completions/min_length": 10.0 + step,
            "completions/max_length": 60.0 + step,
            "rewards/discriminator/mean": 0.2 + 0.02 * step,
            "rewards/discriminator/std": 0.1,
            "reward": 0.2 + 0.02 * step,
            "reward_std": 0.1,
            "kl": 0.001 * step,
            "entropy": 2.0 - 0.05 * step,
            "epoch": step / steps,
            "step": step,
        }
        if step % 2 == 0:
            entry |= {
                "disc/loss": 0.6 - 0.01 * step,
                "disc/acc_real": 0.7,
                "disc/acc_generated": 0.6 + 0.01 * step,
                "disc/accuracy": 0.65 + 0.005 * step,
                "disc/prob_generated_real": 0.4,
                "disc/skipped": 1.0 if step == 8 else 0.0,
                "disc/rounds": float(step // 2),
            }
        history.append(entry)
    history.append(
        {"train_runtime": 12.3, "train_samples_per_second": 4.5, "train_loss": 0.05, "step": steps}
    )
    return history


def test_training_curves_full_history(tmp_path: Path) -> None:
    files = plot_training_curves(_log_history(), tmp_path / "plots")
    assert files == [tmp_path / "plots" / "training_curves.png"]
    _assert_png(files[0])


def test_training_curves_only_reward(tmp_path: Path) -> None:
    history = [{"reward": 0.1 * i, "step": i} for i in range(1, 5)]
    files = plot_training_curves(history, tmp_path)
    assert len(files) == 1
    _assert_png(files[0])


def test_training_curves_nothing_to_plot(tmp_path: Path) -> None:
    assert plot_training_curves([], tmp_path / "a") == []
    summary_only = [{"train_runtime": 1.0, "train_loss": 0.3, "step": 3}, {"epoch": 1.0, "step": 3}]
    assert plot_training_curves(summary_only, tmp_path / "b") == []
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_training_curves_dirty_values(tmp_path: Path) -> None:
    history = _log_history(4)
    history[1]["reward"] = math.nan
    history[2]["reward_std"] = None
    history[3]["kl"] = float("inf")
    history.append({"reward": 1.0})  # no step: ignored
    history.append({"sft/loss": None, "disc/loss": math.nan, "step": 9})
    files = plot_training_curves(history, tmp_path)
    _assert_png(files[0])


def _results() -> dict[str, dict]:
    return {
        "real": {
            "distinct_1": 0.45,
            "distinct_2": 0.8,
            "self_bleu": 0.2,
            "judge_prob_target": 0.9,
            "lengths": [12, 20, 25, 31, 40, 18, 22],
        },
        "base": {
            "two_sample_acc": 0.92,
            "two_sample_acc_ngram": 0.88,
            "frechet": 1.4,
            "distinct_1": 0.3,
            "distinct_2": 0.6,
            "self_bleu": 0.4,
            "length_wasserstein": 9.5,
            "judge_prob_target": 0.3,
            "judge_shift": 0.0,
            "lengths": [50, 60, 55, 70, 65],
        },
        "sft": {
            "two_sample_acc": 0.7,
            "frechet": 0.6,
            "distinct_1": 0.4,
            "judge_shift": 0.3,
            "lengths": [20, 25, 30],
        },
        "ppo": {
            "two_sample_acc": 0.6,
            "frechet": math.nan,
            "distinct_1": None,
            "self_bleu": 0.25,
            "lengths": [],
        },
    }


def test_evaluation_plots(tmp_path: Path) -> None:
    files = plot_evaluation(_results(), tmp_path)
    assert [f.name for f in files] == ["evaluation_metrics.png", "evaluation_lengths.png"]
    for f in files:
        _assert_png(f)


def test_evaluation_without_lengths_or_metrics(tmp_path: Path) -> None:
    files = plot_evaluation({"base": {"two_sample_acc": 0.8, "lengths": None}}, tmp_path / "a")
    assert [f.name for f in files] == ["evaluation_metrics.png"]
    files = plot_evaluation({"real": {"lengths": [1, 2, 3]}, "base": {"lengths": [2, 3, 4]}}, tmp_path / "b")
    assert [f.name for f in files] == ["evaluation_lengths.png"]
    _assert_png(files[0])
    assert plot_evaluation({}, tmp_path / "c") == []
    assert plot_evaluation({"base": {"frechet": None, "two_sample_acc": math.nan}}, tmp_path / "d") == []


def test_frontier_draws_the_seeds_of_a_model_as_one_curve(tmp_path):
    """``NAME-sSEED`` rows are one curve through the seeds' means, with their sd, one point per
    temperature; a model without seeds is its own curve."""
    from gan_rl.eval.plots import FRONTIER_FILE, frontier_curves, plot_frontier

    def row(model, t, acc, d2):
        return {"model": model, "temperature": t, "two_sample_acc": acc, "distinct_2": d2}

    results = {
        "ppo-s0@0.7": row("ppo-s0", 0.7, 0.60, 0.70),
        "ppo-s1@0.7": row("ppo-s1", 0.7, 0.50, 0.74),
        "ppo-s0@1": row("ppo-s0", 1.0, 0.52, 0.80),
        "ppo-s1@1": row("ppo-s1", 1.0, 0.54, 0.78),
        "sft@1": row("sft", 1.0, 0.55, 0.75),
        "real": {"two_sample_acc": 0.5, "distinct_2": 0.8},
    }
    curves = frontier_curves(results, "distinct_2", "two_sample_acc")
    assert set(curves) == {"ppo", "sft"}
    (t7, x7, xsd7, y7, ysd7, n7), (t1, _, _, y1, _, _) = curves["ppo"]
    assert (t7, n7, t1) == (0.7, 2, 1.0)
    assert (
        abs(x7 - 0.72) < 1e-9
        and abs(xsd7 - 0.02) < 1e-9
        and abs(y7 - 0.55) < 1e-9
        and abs(ysd7 - 0.05) < 1e-9
    )
    assert abs(y1 - 0.53) < 1e-9 and curves["sft"] == [(1.0, 0.75, 0.0, 0.55, 0.0, 1)]
    assert plot_frontier(results, tmp_path) == [tmp_path / FRONTIER_FILE]
    assert (tmp_path / FRONTIER_FILE).stat().st_size > 0


def test_frontier_draws_the_noise_floor_and_the_matched_range():
    """A distance's noise floor is a horizontal line in its panels only; panels over distinct-2 shade the
    range every run spans (where matched_diversity compares), here 0.72-0.78."""
    from gan_rl.eval.plots import frontier_figure

    def row(model, t, acc, ngram, d2):
        return {"model": model, "temperature": t, "two_sample_acc": acc, "two_sample_acc_ngram": ngram,
                "distinct_2": d2}  # fmt: skip

    results = {
        "a-s0@0.7": row("a-s0", 0.7, 0.70, 0.71, 0.70),
        "a-s0@1": row("a-s0", 1.0, 0.60, 0.66, 0.78),
        "b-s0@0.7": row("b-s0", 0.7, 0.65, 0.69, 0.72),
        "b-s0@1": row("b-s0", 1.0, 0.58, 0.64, 0.85),
    }
    fig = frontier_figure(results, floors={"two_sample_acc": 0.492, "two_sample_acc_ngram": 0.498})
    panels = {ax.get_ylabel(): ax for ax in fig.axes if ax.get_ylabel()}
    assert set(panels) == {
        "two-sample acc., emb. (lower = closer)",
        "two-sample acc., n-gram (lower = closer)",
    }

    def floor(ax):
        return [ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":"]

    assert floor(panels["two-sample acc., emb. (lower = closer)"]) == [0.492]
    assert floor(panels["two-sample acc., n-gram (lower = closer)"]) == [0.498]
    for ax in panels.values():
        (span,) = [p for p in ax.patches if p.get_label() == "matched range"]
        x0, x1 = span.get_x(), span.get_x() + span.get_width()  # a Rectangle in data x
        assert abs(x0 - 0.72) < 1e-9 and abs(x1 - 0.78) < 1e-9
    # Only the models compared: with c (apart from a and b) the runs share no range, and none is shaded
    # unless c is left out as matched_diversity leaves it out.
    results["c-s0@0.7"] = row("c-s0", 0.7, 0.70, 0.70, 0.90)
    results["c-s0@1"] = row("c-s0", 1.0, 0.70, 0.70, 0.95)

    def shaded(fig):
        return [p for ax in fig.axes for p in ax.patches if p.get_label() == "matched range"]

    assert shaded(frontier_figure(results)) == []
    assert len(shaded(frontier_figure(results, models=["a", "b"]))) == 2
    assert frontier_figure({"real": {"distinct_2": 0.8}}) is None
