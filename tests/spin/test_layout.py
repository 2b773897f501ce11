"""Where a SPIN run resumes: the done iterations (``iteration.json`` and ``model/``) are skipped, the first
other one continues from its latest TRL checkpoint; a fresh run never writes over an earlier one."""

from __future__ import annotations

import pytest

from gan_rl.trainer.spin.layout import IterationSummary, RunLayout


def done(layout: RunLayout, k: int) -> None:
    layout.model_dir(k).mkdir(parents=True)
    layout.write_summary(IterationSummary(iteration=k, rows=4, pairs=4, steps=2, reused_samples=False))


def test_a_fresh_run_starts_at_iteration_one_and_refuses_a_used_folder(tmp_path):
    layout = RunLayout(tmp_path / "out")
    assert layout.resume_point(None) == (1, None)
    assert layout.resume_point(True) == (1, None)  # nothing to resume: a fresh start
    layout.iteration_dir(1).mkdir(parents=True)
    with pytest.raises(ValueError, match="already holds a SPIN run"):
        layout.resume_point(False)


def test_resume_skips_done_iterations_and_takes_the_latest_checkpoint(tmp_path):
    layout = RunLayout(tmp_path)
    done(layout, 1)
    assert layout.last_done() == 1 and layout.resume_point(True) == (2, None)
    for step in (2, 4):
        (layout.iteration_dir(2) / f"checkpoint-{step}").mkdir(parents=True)
    assert layout.resume_point(True) == (2, str(layout.iteration_dir(2) / "checkpoint-4"))
    assert layout.resume_point(str(layout.iteration_dir(2) / "checkpoint-2")) == (
        2,
        str(layout.iteration_dir(2) / "checkpoint-2"),
    )
    # A model without its summary is an iteration cut while saving: not done.
    layout.model_dir(2).mkdir()
    assert layout.last_done() == 1
    done(layout, 3)  # a later iteration does not count while iteration 2 is not done
    assert layout.last_done() == 1


def test_a_checkpoint_outside_the_iteration_to_resume_is_refused(tmp_path):
    layout = RunLayout(tmp_path)
    done(layout, 1)
    (layout.iteration_dir(1) / "checkpoint-2").mkdir()
    with pytest.raises(ValueError, match="is in iteration 1, but the first iteration not done .* is 2"):
        layout.resume_point(str(layout.iteration_dir(1) / "checkpoint-2"))
    (tmp_path / "elsewhere" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(ValueError, match="not a checkpoint folder inside"):
        layout.resume_point(str(tmp_path / "elsewhere" / "checkpoint-2"))


def test_summaries_round_trip(tmp_path):
    layout = RunLayout(tmp_path)
    done(layout, 1)
    assert layout.read_summary(1) == IterationSummary(
        iteration=1, rows=4, pairs=4, steps=2, reused_samples=False
    )
    assert not layout.summary_file(1).with_name("iteration.json.tmp").exists()
