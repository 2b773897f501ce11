"""What gan-rl must know of TRL's sampling cycle: where a checkpoint can resume the same run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gan_rl.trainer.trl_internals import at_generation_boundary, save_steps_problem


def args(**kw):
    base = {
        "save_strategy": "steps",
        "save_steps": 4,
        "num_iterations": 1,
        "steps_per_generation": 1,
        "gradient_accumulation_steps": 1,
    }
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize(
    ("settings", "boundaries"),
    [
        ({}, [1, 2, 3, 4]),  # sampling every step
        ({"num_iterations": 2}, [2, 4]),
        ({"num_iterations": 3}, [3]),
        # 4 micro-steps per generation, 2 per optimizer step, reused twice: every 4 optimizer steps.
        ({"steps_per_generation": 4, "gradient_accumulation_steps": 2, "num_iterations": 2}, [4]),
    ],
)
def test_generation_boundaries(settings, boundaries):
    assert [s for s in range(1, 5) if at_generation_boundary(args(**settings), s)] == boundaries


def test_save_steps_inside_the_cycle_names_the_multiple():
    assert save_steps_problem(args(num_iterations=2, save_steps=4)) is None
    problem = save_steps_problem(args(num_iterations=2, save_steps=3))
    assert problem.startswith("puts checkpoints inside TRL's generation cycle")
    assert problem.endswith("use a multiple of 2")
    assert "num_iterations 2" in problem
    # Not judged: no scheduled checkpoints, a fraction of the run, a trainer without TRL's settings.
    assert save_steps_problem(args(num_iterations=2, save_steps=3, save_strategy="no")) is None
    assert save_steps_problem(args(num_iterations=2, save_steps=0.3)) is None
    assert save_steps_problem(None) is None
