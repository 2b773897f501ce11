"""Preemption-safe stops (gan_rl/preemption.py): SIGTERM, or a first Ctrl-C, while training finishes the
step, writes one complete checkpoint, prints one line with the command that resumes, exits 143 (130) and
writes no run_summary.json; ``--resume`` then ends exactly where the uninterrupted run ends. A second
Ctrl-C aborts at once. Under ``accelerate launch`` a signal to one process stops every process at the
same step."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers import TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import CallbackHandler

from gan_rl.cli.main import main
from gan_rl.cli.outputs import checkpoint_problems
from gan_rl.cli.preemption import Preempted, PreemptionCallback, StopRequest
from tests.conftest import ROOT, base_recipe, write_recipe

# -- helpers ------------------------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@contextlib.contextmanager
def signal_during_step(step: int, signum: int = signal.SIGTERM):
    """This process sends itself ``signum`` once, as optimizer step ``step`` begins (the first trainer to
    get there: in a warm start, the SFT trainer): a scheduler's SIGTERM in the middle of a step."""
    original = CallbackHandler.on_step_begin
    fired: list[int] = []

    def on_step_begin(self, args, state, control):
        if not fired and state.global_step == step - 1:
            fired.append(step)
            # Without the run's handler the default action would end pytest itself: fail instead.
            assert signal.getsignal(signum) not in (signal.SIG_DFL, signal.default_int_handler)
            os.kill(os.getpid(), signum)
        return original(self, args, state, control)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CallbackHandler, "on_step_begin", on_step_begin)
        yield
    assert fired, f"training never reached step {step}"


def stop_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("stopped by ")]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


def same_weights(a: Path, b: Path) -> None:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    diff = max((first[k].float() - second[k].float()).abs().max().item() for k in first)
    assert diff == 0.0, f"{a} and {b} differ by up to {diff:g}"


# -- the signal handler and the callback (no training) ------------------------------------------------


def test_first_signal_asks_for_a_stop_and_a_second_ctrl_c_aborts():
    request = StopRequest()
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with request.installed():
        os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: a graceful stop
        assert request.signum == signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)  # a later SIGTERM changes nothing
        assert request.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C: at once
    assert {s: signal.getsignal(s) for s in before} == before  # the previous handlers are back

    request = StopRequest()
    with request.installed():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler that repeats itself
        assert request.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while stopping for SIGTERM: abort
    assert {s: signal.getsignal(s) for s in before} == before


def test_handlers_are_left_alone_outside_the_main_thread():
    """Python sets signal handlers from the main thread only: elsewhere the run trains as before."""
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def body():
        with StopRequest().installed():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before]


def test_the_callback_saves_stops_and_raises_after_a_signal(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", save_strategy="no")
    state, control = TrainerState(global_step=3, max_steps=10), TrainerControl()
    stop = PreemptionCallback()
    stop.on_step_end(args, state, control)
    assert not control.should_save and not control.should_training_stop

    stop.request.handle(signal.SIGTERM)
    stop.on_step_end(args, state, control)
    assert control.should_save and control.should_training_stop  # whatever save_strategy says
    stop.on_save(args, state, control)
    with pytest.raises(Preempted) as caught:
        stop.raise_if_stopped(type("Trainer", (), {"state": state})())
    assert caught.value.exit_code == 143 and caught.value.checkpoint == tmp_path / "checkpoint-3"
    assert str(caught.value) == f"stopped by SIGTERM after step 3 of 10: checkpoint {tmp_path}/checkpoint-3"
    assert Preempted(signal.SIGINT, 1, 2, None).exit_code == 130


# -- stopped runs through the command line, resumed bit for bit ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algorithm", "trainer", "steps", "signal_at", "stop_at"),
    [
        ("ppo", {}, 3, 2, 2),
        ("gumbel", {"per_device_train_batch_size": 4}, 3, 2, 2),  # gumbel: its backward is the slow part
        # PPO epochs: TRL samples every second step and keeps the samples in memory only, so a signal in
        # step 1 stops after step 2, where a checkpoint resumes the same run.
        ("ppo", {"num_iterations": 2}, 4, 1, 2),
    ],
    ids=["ppo", "gumbel", "ppo-num-iterations-2"],
)
def test_stopped_run_resumes_to_the_uninterrupted_one(
    tmp_path, recipe_factory, algorithm, trainer, steps, signal_at, stop_at
):
    """SIGTERM during a step with save_strategy 'no': a checkpoint of that step (or of the end of TRL's
    generation cycle), complete (generator, optimizer, discriminator, buffers), no final model, no
    summary, exit 143; ``--resume`` then ends bit-identical to a run that was never stopped."""
    recipe = recipe_factory(
        trainer={"max_steps": steps, **trainer},
        discriminator={"replay_size": 8, "replay_fraction": 0.5, "real_pool_size": 16, "cache_size": 64},
    )
    out = tmp_path / "out"
    checkpoint = out / f"checkpoint-{stop_at}"
    with signal_during_step(signal_at):
        result = invoke(algorithm, str(recipe), "--samples", "0")
    assert result.exit_code == 143, result.output
    assert stop_line(result.output) == (
        f"stopped by SIGTERM after step {stop_at} of {steps}: checkpoint {checkpoint}; "
        f"resume with: gan-rl {algorithm} {recipe} --samples 0 --resume"
    )
    assert checkpoint_problems(checkpoint) == []
    assert (checkpoint / "discriminator" / "buffer.rank0.json").is_file()
    assert [p.name for p in out.glob("checkpoint-*")] == [checkpoint.name]
    assert not (out / "run_summary.json").exists() and not (out / "model.safetensors").exists()

    resumed = invoke(algorithm, str(recipe), "--samples", "0", "--resume")
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == steps
    assert summary["restored"]["path"] == str(checkpoint / "discriminator")
    whole = invoke(algorithm, str(recipe), "--samples", "0", "--output-dir", str(tmp_path / "whole"))
    assert whole.exit_code == 0, whole.output
    for name in ("model.safetensors", "discriminator/model.safetensors"):
        same_weights(out / name, tmp_path / "whole" / name)


@pytest.mark.slow
def test_a_signal_in_the_last_step_lets_the_run_finish(tmp_path, recipe_factory, caplog):
    """Training is complete after the last step: the final model and summary, exit 0, no checkpoint
    (transformers would train one step too many resuming from a checkpoint of the last step)."""
    out = tmp_path / "out"
    with signal_during_step(2):
        result = invoke("reinforce", str(recipe_factory(trainer={"max_steps": 2})), "--samples", "0")
    assert result.exit_code == 0, result.output
    assert "SIGTERM came in the last training step: finishing the run" in caplog.text
    assert json.loads((out / "run_summary.json").read_text())["steps"] == 2
    assert not list(out.glob("checkpoint-*"))


SFT = {
    "max_steps": 3,
    "per_device_train_batch_size": 8,
    "learning_rate": 3e-3,
    "logging_steps": 1,
    "save_strategy": "no",
}


@pytest.mark.slow
def test_stopped_sft_run_resumes_to_the_uninterrupted_one(tmp_path, recipe_factory):
    """Ctrl-C (SIGINT) once: the same graceful stop, exit code 130."""
    recipe = recipe_factory(sft=SFT)
    out = tmp_path / "sft"
    with signal_during_step(2, signal.SIGINT):
        result = invoke("sft", str(recipe), "--output-dir", str(out))
    assert result.exit_code == 130, result.output
    assert stop_line(result.output) == (
        f"stopped by SIGINT after step 2 of 3: checkpoint {out}/checkpoint-2; "
        f"resume with: gan-rl sft {recipe} --output-dir {out} --resume"
    )
    assert checkpoint_problems(out / "checkpoint-2", discriminator=False) == []
    assert not (out / "run_summary.json").exists()

    assert invoke("sft", str(recipe), "--output-dir", str(out), "--resume").exit_code == 0
    assert invoke("sft", str(recipe), "--output-dir", str(tmp_path / "whole")).exit_code == 0
    same_weights(out / "model.safetensors", tmp_path / "whole" / "model.safetensors")


@pytest.mark.slow
def test_a_stop_during_the_warm_start_resumes_it_then_trains(tmp_path, recipe_factory):
    """``model.warm_start: sft``: a stop in the SFT part leaves the SFT run's checkpoint; the adversarial
    command with ``--resume`` (the adversarial run has no checkpoint yet) resumes the SFT run, then trains."""
    recipe = recipe_factory(model={"warm_start": "sft"}, sft=SFT, trainer={"max_steps": 2})
    sft_out = tmp_path / "out-sft"
    with signal_during_step(2):
        result = invoke("ppo", str(recipe), "--samples", "0")
    assert result.exit_code == 143, result.output
    assert stop_line(result.output) == (
        f"stopped by SIGTERM during the SFT warm start, after step 2 of 3: checkpoint "
        f"{sft_out}/checkpoint-2; resume with: gan-rl ppo {recipe} --samples 0 --resume"
    )
    assert checkpoint_problems(sft_out / "checkpoint-2", discriminator=False) == []
    assert not (sft_out / "run_summary.json").exists()

    resumed = invoke("ppo", str(recipe), "--samples", "0", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert (sft_out / "run_summary.json").is_file() and (tmp_path / "out" / "run_summary.json").is_file()


# -- the real signal from outside, and two processes ---------------------------------------------------


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


@pytest.mark.slow
def test_sigterm_from_outside_stops_the_command_with_143_and_one_line(tmp_path, tiny_model_dir):
    """``python -m gan_rl ppo`` killed with SIGTERM from outside once it is training: it finishes its
    step, writes the checkpoint, prints the line and exits 143."""
    out = tmp_path / "out"
    recipe = write_recipe(tmp_path / "r.yaml", base_recipe(tiny_model_dir, out, trainer={"max_steps": 1000}))
    cmd = [sys.executable, "-m", "gan_rl", "ppo", str(recipe), "--samples", "0"]
    proc = subprocess.Popen(
        cmd, env=child_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.time() + 180
    while not any(line.startswith("{'loss'") for line in list(lines)):  # a step's log: it is training
        assert proc.poll() is None and time.time() < deadline, "".join(lines)[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    reader.join(timeout=10)
    output = "".join(lines)
    assert code == 143, output[-3000:]
    line = stop_line(output)
    match = re.fullmatch(
        rf"stopped by SIGTERM after step (\d+) of 1000: checkpoint (\S+); "
        rf"resume with: gan-rl ppo {re.escape(str(recipe))} --samples 0 --resume",
        line,
    )
    assert match, line
    assert match.group(2) == f"{out}/checkpoint-{match.group(1)}"
    assert checkpoint_problems(Path(match.group(2))) == []
    assert not (out / "run_summary.json").exists()


# A training script for accelerate launch: gan-rl itself, with rank 1 (only) sending itself SIGTERM as
# step 2 begins, and every rank writing its exit code beside the run.
ONE_RANK_SIGNALLED = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from transformers.trainer_callback import CallbackHandler
    from gan_rl.cli.main import main

    original = CallbackHandler.on_step_begin
    def on_step_begin(self, args, state, control):
        if os.environ["RANK"] == "1" and state.global_step == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, args, state, control)
    CallbackHandler.on_step_begin = on_step_begin
    try:
        main(prog_name="gan-rl")
    except SystemExit as exc:
        Path(os.environ["EXIT_DIR"], f"exit.rank{os.environ['RANK']}").write_text(str(exc.code))
        raise
    """
)


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path, tiny_model_dir):
    """Two CPU processes (gloo): rank 1 alone gets SIGTERM during step 2. Both stop after step 2 (the flag
    is all-reduced), the checkpoint holds both ranks' buffers, both exit 143, and nothing hangs."""
    from tests.cli.test_distributed import free_port

    out = tmp_path / "out"
    recipe = base_recipe(
        tiny_model_dir, out, trainer={"max_steps": 5, "per_device_train_batch_size": 4, "use_cpu": True}
    )
    path = write_recipe(tmp_path / "r.yaml", recipe)
    script = tmp_path / "train.py"
    script.write_text(ONE_RANK_SIGNALLED)
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", free_port(),
        str(script), "ppo", str(path), "--samples", "0",
    ]  # fmt: skip
    env = {**child_env(), "EXIT_DIR": str(tmp_path)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]  # the launcher reports the processes' exit
    assert {p.name: p.read_text() for p in tmp_path.glob("exit.rank*")} == {
        "exit.rank0": "143",
        "exit.rank1": "143",
    }, output[-5000:]
    assert stop_line(output) == (
        f"stopped by SIGTERM after step 2 of 5: checkpoint {out}/checkpoint-2; resume with (under the "
        f"same launcher): gan-rl ppo {path} --samples 0 --resume"
    )
    assert checkpoint_problems(out / "checkpoint-2") == []
    assert sorted(p.name for p in (out / "checkpoint-2" / "discriminator").glob("buffer.rank*.json")) == [
        "buffer.rank0.json",
        "buffer.rank1.json",
    ]
    assert not (out / "run_summary.json").exists()
