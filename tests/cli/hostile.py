"""The harness of the hostile-input tables (``tests/cli/test_hostile_*.py``): each row is a command a hostile
user could run, with what must happen.

A row runs ``python -m gan_rl ARGS`` in a fresh process (so that what libraries print while they import is
seen as the user sees it), in a temporary directory its ``setup`` prepared, and asserts:

- the exit code (2: bad input; 1: the run failed while training);
- no traceback anywhere in the output;
- for bad input (exit 2), the whole output is one line, ``error: ...``; for a failed run (exit 1), the
  last line is ``training failed: ...`` (the run's own log lines may come before it);
- that line names every string of ``names`` (the field, the file, what to do);
- afterwards, no ``run_summary.json`` under the output directory (nothing presented as finished), and,
  where ``output_absent``, no output directory at all.

Placeholders in ``args``: ``{tmp}`` (the row's directory) and ``{recipe}`` (``{tmp}/recipe.yaml``, which
``setup`` usually writes with :func:`tests.conftest.write_recipe`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    """One hostile input and what it must end in."""

    id: str
    args: list[str]
    code: int
    names: list[str]
    # Prepares the row's directory (writes the recipe, corrupts a file, ...); gets (tmp dir, session
    # fixtures as a dict: tiny_model_dir, ...).
    setup: Callable[[Path, dict], None] | None = None
    # The output directory the command would write (relative to the row's directory).
    output_dir: str = "out"
    # Whether the output directory must not exist afterwards (bad input refused before anything is written).
    output_absent: bool = False
    timeout: int = 300
    env: dict[str, str] = field(default_factory=dict)


def run_case(case: Case, tmp: Path, fixtures: dict) -> None:
    """Run ``case`` in ``tmp`` and assert what its row says."""
    if case.setup is not None:
        case.setup(tmp, fixtures)
    args = [a.format(tmp=tmp, recipe=tmp / "recipe.yaml") for a in case.args]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "COLUMNS": "200",
        **case.env,
    }
    result = subprocess.run(
        [sys.executable, "-m", "gan_rl", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=case.timeout,
    )
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.strip()]
    shown = f"exit {result.returncode}; output:\n{output}"
    assert "Traceback" not in output, shown
    assert result.returncode == case.code, shown
    if case.code == 2:
        assert len(lines) == 1, shown
        line = lines[0]
        assert line.startswith("error: "), shown
    else:
        failures = [line for line in lines if line.startswith("training failed: ")]
        assert len(failures) == 1 and lines[-1] == failures[0], shown
        line = failures[0]
    for name in case.names:
        assert name in line, f"{name!r} not in the message: {line}"
    out = tmp / case.output_dir
    if case.output_absent:
        assert not out.exists(), f"{out} was created: {sorted(p.name for p in out.iterdir())}"
    if out.exists():
        finished = list(out.rglob("run_summary.json"))
        assert not finished, f"{finished}: a failed run presented as finished"
