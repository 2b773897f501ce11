"""``gan-rl spin`` end to end on the tiny model: a finished run (after the SFT warm start) with its summary,
final model and curves; a run stopped by SIGTERM (inside an iteration, and between two) that ``--resume``
ends bit for bit where the uninterrupted run ends; ``gan-rl check --algorithm spin`` refusing a bad
``spin:`` field in one line. The trainer's own mechanisms (pairs, reference, snapshot) are tested in
tests/spin/."""

from __future__ import annotations

import json
import signal

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from gan_rl.cli.main import main
from tests.cli.test_preemption import same_weights, signal_during_step, stop_line

# Two short iterations on 8 of the 64 train rows (one own sample each), every step logged.
SPIN = {
    "iterations": 2,
    "max_steps": 2,
    "per_device_train_batch_size": 4,
    "prompts_per_iteration": 8,
    "max_completion_length": 6,
    "generation_batch_size": 8,
    "learning_rate": 1e-3,
    "beta": 0.1,
    "logging_steps": 1,
    "save_strategy": "no",
}
SFT = {"max_steps": 2, "per_device_train_batch_size": 8, "learning_rate": 3e-3, "save_strategy": "no"}


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.slow
def test_spin_after_the_sft_warm_start_finishes_with_its_summary_model_and_curves(tmp_path, recipe_factory):
    """``model.warm_start: sft``: SFT runs first into ``OUT-sft``, and SPIN starts from its result. The run
    ends with exit 0, one summary per iteration (pairs, steps, DPO metrics), the final policy (trained:
    not the SFT weights) with its tokenizer in ``OUT-spin``, the DPO curves, and refuses to run again into
    the finished directory."""
    recipe = recipe_factory(model={"warm_start": "sft"}, sft=SFT, spin=SPIN)
    result = invoke("spin", recipe)
    assert result.exit_code == 0, result.output
    out, sft_out = tmp_path / "out-spin", tmp_path / "out-sft"
    assert (sft_out / "run_summary.json").is_file()

    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["algorithm"] == "spin" and summary["status"] == "completed"
    assert [it["iteration"] for it in summary["iterations"]] == [1, 2]
    assert summary["steps"] == 4
    assert all(it["steps"] == 2 and it["pairs"] == 8 for it in summary["iterations"])
    assert all("rewards/margins" in it["metrics"] for it in summary["iterations"])
    assert summary["loss_first"] is not None and summary["plots"] == [str(out / "training_curves.png")]
    assert summary["sample_selection"] is None
    assert "gan-rl spin: finished 2 iterations (4 steps)" in result.output

    recorded = (out / "recipe.yaml").read_text()
    assert f"name_or_path: {sft_out.resolve()}" in recorded  # SPIN started from the SFT result
    final = load_file(str(out / "model.safetensors"))
    start = load_file(str(sft_out / "model.safetensors"))
    assert final.keys() == start.keys() and any(not final[k].equal(start[k]) for k in final)
    assert AutoModelForCausalLM.from_pretrained(out) is not None and (out / "tokenizer_config.json").is_file()
    for k in (1, 2):
        assert (out / f"iteration-{k}" / "pairs.jsonl").is_file()

    again = invoke("spin", recipe)
    assert again.exit_code == 2 and "already holds a finished run" in again.output


@pytest.mark.slow
@pytest.mark.parametrize(
    ("max_steps", "expected"),
    [
        # A signal in step 2 of 3: a checkpoint of that step inside iteration 1.
        (3, "stopped by SIGTERM in SPIN iteration 1 of 2, after step 2 of 3: checkpoint {out}/iteration-1/checkpoint-2"),
        # A signal in iteration 1's last step lets it finish; the run stops before iteration 2 samples.
        (2, "stopped by SIGTERM after SPIN iteration 1 of 2: the iterations done are saved"),
    ],
    ids=["inside-an-iteration", "between-iterations"],
)  # fmt: skip
def test_a_stopped_run_resumes_to_the_uninterrupted_one(tmp_path, recipe_factory, max_steps, expected):
    """SIGTERM in step 2 (``save_strategy: no``): exit 143, one line with the command that resumes, no
    summary and no final model; ``--resume`` then ends with the uninterrupted run's weights, bit for bit."""
    recipe = recipe_factory(spin={**SPIN, "max_steps": max_steps})
    out = tmp_path / "out-spin"
    with signal_during_step(2, signal.SIGTERM):
        result = invoke("spin", recipe)
    assert result.exit_code == 143, result.output
    resume_line = f"resume with: gan-rl spin {recipe} --resume"
    assert stop_line(result.output) == f"{expected.format(out=out)}; {resume_line}"
    assert not (out / "run_summary.json").exists() and not (out / "model.safetensors").exists()
    assert (out / "iteration-1" / "iteration.json").is_file() == (max_steps == 2)

    resumed = invoke("spin", recipe, "--resume")
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["steps"] == 2 * max_steps
    # Inside an iteration: iteration 1 went on from its checkpoint; between: the resumed run skipped it.
    checkpoint = str(out / "iteration-1" / "checkpoint-2") if max_steps == 3 else None
    assert summary["iterations"][0]["resumed_from"] == checkpoint
    whole = invoke("spin", recipe, "--output-dir", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    same_weights(out / "model.safetensors", tmp_path / "whole" / "model.safetensors")


def test_check_passes_a_spin_recipe_and_refuses_a_bad_field_in_one_line(recipe_factory):
    """``gan-rl check --algorithm spin`` builds the SpinConfig as the run does: a bad value, an unknown key
    (with the closest spelling) or a quantized generator is one line naming the field, exit 2."""
    recipe = recipe_factory(spin=SPIN)
    ok = invoke("check", recipe, "--algorithm", "spin")
    assert ok.exit_code == 0 and "valid for spin" in ok.output, ok.output
    cases = {
        "spin.iterations=0": "error: spin.iterations: expected an integer >= 1, got 0.",
        "spin.beta=-1": "error: spin.beta: expected a finite number > 0, got -1.0.",
        "spin.learning_rate=-1": "error: spin.learning_rate: expected 0 or a positive finite number, got -1.0.",
        "spin.itrations=3": "error: spin: unknown key 'itrations'. Did you mean 'iterations'?",
        "spin.loss_type=nope": "error: spin.loss_type: ['nope'] is not valid; valid: sigmoid,",
        "spin.max_completion_length=500": "error: spin.max_completion_length: 500 tokens do not fit",
        "spin.rejected_by=best": "error: spin.rejected_by: expected 'sample' or 'discriminator', got 'best'.",
        "spin.rejected_by=discriminator": "error: spin.samples_per_prompt: rejected_by 'discriminator' picks",
    }
    for setting, message in cases.items():
        result = invoke("check", recipe, "--algorithm", "spin", "--set", setting)
        assert result.exit_code == 2, (setting, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), result.output
    quantize = ["--set", "model.lora.r=4", "--set", "model.quantization.bits=4"]
    quantized = invoke("check", recipe, "--algorithm", "spin", *quantize)
    assert quantized.exit_code == 2 and quantized.output.startswith("error: model.quantization: gan-rl spin")
    adapter = recipe_factory(
        "adapter.yaml",
        spin={**SPIN, "rejected_by": "discriminator", "samples_per_prompt": 2},
        model={"lora": {"r": 4}},
        discriminator={"kind": "adapter"},
    )
    refused = invoke("check", adapter, "--algorithm", "spin")
    assert refused.exit_code == 2 and refused.output.startswith("error: discriminator.kind: spin.rejected_by")
    # The section is checked for the other commands too, as ppo: and sft: are.
    assert invoke("check", recipe, "--set", "spin.iterations=0").output.startswith("error: spin.iterations")


@pytest.mark.slow
def test_spin_with_the_discriminator_picking_the_rejected_samples(tmp_path, recipe_factory):
    """``spin.rejected_by: discriminator`` takes the recipe's ``discriminator:``: each iteration trains on
    one pair per prompt out of its samples, and the run summary says how the discriminator ranked them."""
    spin = {**SPIN, "iterations": 1, "samples_per_prompt": 2, "rejected_by": "discriminator"}
    result = invoke("spin", recipe_factory(spin=spin))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out-spin" / "run_summary.json").read_text())
    (iteration,) = summary["iterations"]
    assert iteration["pairs"] == 8 and iteration["rows"] == 8
    assert 0.0 <= iteration["rejection"]["heldout_accuracy"] <= 1.0
    assert iteration["rejection"]["mean_kept_score"] <= iteration["rejection"]["mean_score"]
