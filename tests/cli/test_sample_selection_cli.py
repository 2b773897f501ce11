"""The recipe's ``sample_selection:`` section through the commands (gan_rl/cli/selection.py) on the tiny
model: ``sft`` (LoRA: the selected adapter merged into an ordinary checkpoint), ``ppo`` (full fine-tuning)
and ``spin`` (one selection per iteration, the run's the best of them) report the selected step and
score in the run summary and on the command line, and the selected model loads with ``gan-rl generate
--model``; ``gan-rl check`` refuses a section that could not run in one line. The callback's own
mechanisms are tested in tests/trainer/test_sample_selection.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from gan_rl.cli.main import main

# Every step scored, 8 of the 13 validation rows (a fifth of the 64 train rows), short samples.
SELECTION = {"eval_steps": 1, "prompts": 8, "max_new_tokens": 6, "batch_size": 8}
VALIDATION = {"validation_fraction": 0.2}
LORA = {"lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}}
SFT = {
    "max_steps": 3,
    "per_device_train_batch_size": 8,
    "learning_rate": 3e-3,
    "logging_steps": 1,
    "save_strategy": "no",
    "eval_strategy": "no",
}


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def selection_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("selection by samples: ")]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


def generates(recipe: Path, model: Path, out: Path) -> None:
    """``gan-rl generate --model model`` samples every held-out prompt."""
    result = invoke("generate", recipe, "--model", model, "--output", out)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and all(isinstance(r["generated"], str) for r in rows)


@pytest.mark.slow
def test_sft_with_lora_selects_and_merges_the_selected_adapter(tmp_path, recipe_factory):
    """An evaluation at step 0 and after every step; the summary's best step and score are the curve's
    argmin and minimum; ``best-by-samples/`` keeps the adapter the callback saved and
    ``best-by-samples-merged/`` is that adapter merged into the starting weights (the same tensors peft's
    own merge gives), an ordinary checkpoint that ``gan-rl generate`` loads, as it loads the adapter. The
    trainer's own loss log is kept at every step."""
    from peft import AutoPeftModelForCausalLM

    recipe = recipe_factory(model=LORA, data=VALIDATION, sft=SFT, sample_selection=SELECTION)
    result = invoke("sft", recipe)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out-sft"
    summary = json.loads((out / "run_summary.json").read_text())
    selected = summary["sample_selection"]
    curve = {int(k): v for k, v in selected["curve"].items()}
    assert list(curve) == [0, 1, 2, 3]
    best = min(curve, key=lambda step: (curve[step], step))
    assert selected["best_step"] == best and selected["best_score"] == curve[best]
    assert selected["merged"] is True and selected["model"] == str(out / "best-by-samples-merged")
    assert selected["seconds_per_evaluation"] > 0 and selected["samples_per_evaluation"] == 8
    assert selection_line(result.output).startswith(
        f"selection by samples: step {best}, two-sample accuracy {curve[best]:.3f} (4 evaluations, "
    )
    assert (out / "best-by-samples" / "adapter_config.json").is_file()
    merged = out / "best-by-samples-merged"
    assert json.loads((merged / "selection.json").read_text())["best_step"] == best
    peft_merged = AutoPeftModelForCausalLM.from_pretrained(out / "best-by-samples").merge_and_unload()
    expected = peft_merged.state_dict()
    saved = load_file(str(merged / "model.safetensors"))
    assert saved and all(torch.equal(t, expected[k].to(t.dtype)) for k, t in saved.items())

    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3]
    generates(recipe, merged, tmp_path / "merged.jsonl")
    generates(recipe, out / "best-by-samples", tmp_path / "adapter.jsonl")


@pytest.mark.slow
def test_warm_start_starts_from_the_sft_model_selected_by_samples(tmp_path, recipe_factory):
    """``model.warm_start: sft`` with ``sample_selection:``: the adversarial run's generator is the model
    the SFT run selected (merged under LoRA), not its last one; an SFT run that selected nothing hands on
    its final model, and so does one whose selected folder is gone (with a warning)."""
    from gan_rl.cli.recipe import load_recipe
    from gan_rl.cli.sft import warm_start

    recipe = recipe_factory(
        model={**LORA, "warm_start": "sft"}, data=VALIDATION, sft=SFT, sample_selection=SELECTION
    )
    result = invoke("sft", recipe)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out-sft"
    selected = out / "best-by-samples-merged"
    assert (selected / "config.json").is_file()
    assert warm_start(load_recipe(recipe)).model.name_or_path == str(selected.resolve())

    summary_file = out / "run_summary.json"
    summary = json.loads(summary_file.read_text())
    summary_file.write_text(json.dumps({**summary, "sample_selection": None}))
    assert warm_start(load_recipe(recipe)).model.name_or_path == str(out.resolve())
    summary_file.write_text(json.dumps(summary))
    selected.rename(tmp_path / "moved")
    assert warm_start(load_recipe(recipe)).model.name_or_path == str(out.resolve())


@pytest.mark.slow
def test_ppo_selects_and_its_selected_model_loads(tmp_path, recipe_factory):
    """``ppo`` (full fine-tuning): the selection is in the run summary, ``best-by-samples/`` is the model
    itself (nothing to merge), and ``gan-rl generate`` loads it."""
    recipe = recipe_factory(data=VALIDATION, trainer={"max_steps": 2}, sample_selection=SELECTION)
    result = invoke("ppo", recipe, "--samples", "0")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    selected = json.loads((out / "run_summary.json").read_text())["sample_selection"]
    assert list(selected["curve"]) == ["0", "1", "2"]
    assert selected["best_score"] == min(selected["curve"].values())
    assert selected["merged"] is False and selected["model"] == str(out / "best-by-samples")
    assert f"step {selected['best_step']}, two-sample accuracy" in selection_line(result.output)
    generates(recipe, out / "best-by-samples", tmp_path / "selected.jsonl")


@pytest.mark.slow
def test_spin_selects_per_iteration_and_keeps_the_best_iteration(tmp_path, recipe_factory):
    """``spin``: a callback per iteration writing into ``iteration-k/``, the starting model scored in
    iteration 1 only; the run's curve counts the run's steps, its selection is the iteration with the
    lowest best score, linked into ``best-by-samples/`` (and merged under LoRA), and loads with
    ``gan-rl generate``."""
    spin = {
        "iterations": 2,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "prompts_per_iteration": 8,
        "max_completion_length": 6,
        "generation_batch_size": 8,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "no",
    }
    recipe = recipe_factory(model=LORA, data=VALIDATION, spin=spin, sample_selection=SELECTION)
    result = invoke("spin", recipe)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out-spin"
    selected = json.loads((out / "run_summary.json").read_text())["sample_selection"]
    per_iteration = {
        k: json.loads((out / f"iteration-{k}" / "best-by-samples" / "selection.json").read_text())
        for k in (1, 2)
    }
    assert list(per_iteration[1]["curve"]) == ["0", "1", "2"]  # iteration 1 scores its start
    assert list(per_iteration[2]["curve"]) == ["1", "2"]  # its start is iteration 1's end, scored there
    assert list(selected["curve"]) == ["0", "1", "2", "3", "4"]
    best = min((1, 2), key=lambda k: (per_iteration[k]["best_score"], k))
    assert selected["best_iteration"] == best and selected["best_score"] == per_iteration[best]["best_score"]
    assert selected["iteration_step"] == per_iteration[best]["best_step"]
    assert selected["best_step"] == 2 * (best - 1) + per_iteration[best]["best_step"]
    assert f"iteration {best} step {selected['iteration_step']}" in selection_line(result.output)
    assert json.loads((out / "best-by-samples" / "selection.json").read_text())["best_iteration"] == best
    assert selected["model"] == str(out / "best-by-samples-merged")
    generates(recipe, out / "best-by-samples-merged", tmp_path / "selected.jsonl")


def test_check_refuses_a_selection_that_could_not_run(recipe_factory):
    """One line, exit 2: no validation split (never data.test), fewer validation rows than folds, a bad
    value or an unknown key of the section; with a validation split the recipe is valid."""
    recipe = recipe_factory(sample_selection=SELECTION)
    split = "data.validation_fraction=0.2"  # 13 validation rows
    cases = {
        (): "error: sample_selection: needs data.validation or data.validation_fraction",
        ("data.validation_fraction=0.05",): "error: sample_selection.folds: 5 folds of the two-sample test",
        (split, "sample_selection.eval_steps=0"): "error: sample_selection.eval_steps: expected",
        (split, "sample_selection.step=3"): "error: sample_selection: unknown key 'step'",
    }
    for settings, message in cases.items():
        sets = [word for s in settings for word in ("--set", s)]
        for algorithm in ("sft", "ppo"):
            result = invoke("check", recipe, "--algorithm", algorithm, *sets)
            assert result.exit_code == 2, (settings, result.output)
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(message), result.output
    ok = invoke("check", recipe, "--algorithm", "sft", "--set", split)
    assert ok.exit_code == 0 and "validation: 13 rows" in ok.output, ok.output
