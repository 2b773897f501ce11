"""Selection by samples (:mod:`gan_rl.eval.sample_selection`) inside TRL's own trainers on the tiny model:
the fixed prompts, the score (the statistic of ``gan-rl evaluate``), the selected weights, training left
bit-for-bit as it is, resume, bad settings, and the curve in ``training_curves.png``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from gan_rl.errors import ConfigError, InputError
from gan_rl.eval import sample_selection as selection_module
from gan_rl.eval.sample_selection import (
    CHECKPOINTED_SUFFIX,
    METRIC,
    SELECTION_DIR,
    SELECTION_FILE,
    STATE_FILE,
    SampleSelectionCallback,
    SampleSelectionConfig,
    read_selection,
    two_sample_ngram,
)
from tests.conftest import quickstart_texts

ROWS = quickstart_texts(64)
TRAIN, VALIDATION = ROWS[:48], ROWS[48:]  # disjoint rows: the validation split the selection samples
BF16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def selection(**settings) -> SampleSelectionCallback:
    """A callback on the 16 validation rows, 12 of them drawn, short samples (fast on CPU)."""
    config = SampleSelectionConfig(**{"eval_steps": 1, "prompts": 12, "max_new_tokens": 6, "batch_size": 8,
                                      **settings})  # fmt: skip
    return SampleSelectionCallback(config, [r["topic"] for r in VALIDATION], [r["post"] for r in VALIDATION])


class StopAt(TrainerCallback):
    """Ends training after step ``step`` (its checkpoint, if one is due, is written first): an interrupted
    run with the uninterrupted run's schedule."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


class Weights(TrainerCallback):
    """The model's weights (or, under LoRA, the adapter's state dict as saved) after every step, and
    before the first."""

    def __init__(self) -> None:
        self.at: dict[int, dict[str, torch.Tensor]] = {}

    def _record(self, state, model) -> None:
        if hasattr(model, "peft_config"):
            from peft import get_peft_model_state_dict

            tensors = get_peft_model_state_dict(model)
        else:
            tensors = model.state_dict()
        self.at[state.global_step] = {k: v.detach().clone() for k, v in tensors.items()}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._record(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._record(state, model)


class Disturb(TrainerCallback):
    """Draws from torch's global generator after every step: what sampling without the saved and
    restored generator states would do (the control that shows the bit-identity test can fail)."""

    def on_step_end(self, args, state, control, **kwargs):
        torch.rand(1)


def sft_trainer(model_dir: Path, out: Path, callbacks: list, max_steps: int = 4, lora: bool = False,
                dropout: float = 0.0, **config):  # fmt: skip
    """TRL's SFTTrainer on the tiny model and the 48 training rows (prompt-completion, plain text)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(model_dir, attention_dropout=dropout)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train = Dataset.from_list([{"prompt": r["topic"], "completion": " " + r["post"]} for r in TRAIN])
    fields = {
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "bf16": BF16,
        "disable_tqdm": True,
        **config,
    }
    args = SFTConfig(output_dir=str(out), max_steps=max_steps, **fields)
    peft_config = (
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM") if lora else None
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=callbacks)  # fmt: skip
    for callback in callbacks:
        if isinstance(callback, SampleSelectionCallback):
            callback.attach(trainer)
    return trainer


def grpo_trainer(model_dir: Path, out: Path, callbacks: list, max_steps: int = 3):
    """TRL's GRPOTrainer on the tiny model with a reward that needs no model (the response's length): its
    own sampling draws from torch's global generator at every step."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    def length_reward(completions, **kwargs):
        return [float(len(c.split())) for c in completions]

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train = Dataset.from_list([{"prompt": r["topic"]} for r in TRAIN])
    args = GRPOConfig(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=6, learning_rate=1e-2, logging_steps=1, save_strategy="no",
                      report_to="none", seed=0, bf16=BF16, disable_tqdm=True)  # fmt: skip
    trainer = GRPOTrainer(model=model, reward_funcs=[length_reward], args=args, train_dataset=train,
                          processing_class=tokenizer, callbacks=callbacks)  # fmt: skip
    for callback in callbacks:
        if isinstance(callback, SampleSelectionCallback):
            callback.attach(trainer)
    return trainer


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_tensors(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Every saved tensor equals the expected one bit for bit (tied weights may be saved once)."""
    assert saved and set(saved) <= set(expected), sorted(set(saved) - set(expected))
    for name, tensor in saved.items():
        assert torch.equal(tensor, expected[name].to(tensor.dtype)), name


# --------------------------------------------------------------------------------------------------
# Settings and the statistic
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("eval_steps", 0),
        ("eval_steps", 1.5),
        ("prompts", 3),  # fewer than folds (5)
        ("folds", 1),
        ("temperature", 0.0),
        ("temperature", float("nan")),
        ("top_p", 1.5),
        ("max_new_tokens", 0),
        ("batch_size", 0),
        ("seed", -1),
        ("seed", True),
        ("at_start", "yes"),
    ],
)
def test_bad_settings_raise_a_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"^SampleSelectionConfig\.{field}: expected ") as raised:
        SampleSelectionConfig(**{field: value})
    assert raised.value.detail.startswith(f"{field}: ")


def test_every_setting_has_help():
    from dataclasses import fields

    assert all(f.metadata.get("help") for f in fields(SampleSelectionConfig))


def test_too_few_validation_rows_or_mismatched_references_are_refused():
    config = SampleSelectionConfig()
    with pytest.raises(ValueError, match=r"at least folds \(5\) validation rows, got 4"):
        SampleSelectionCallback(config, ["a"] * 4, ["b"] * 4)
    with pytest.raises(ValueError, match="6 prompts but 5 references"):
        SampleSelectionCallback(config, ["a"] * 6, ["b"] * 5)
    with pytest.raises(ValueError, match="non-empty text"):
        SampleSelectionCallback(config, ["a"] * 6, ["b"] * 5 + ["  "])


def test_the_score_is_the_statistic_gan_rl_evaluate_reports():
    """``two_sample_ngram`` is ``two_sample_acc_ngram`` of ``gan-rl evaluate`` for the same texts and
    settings: a selection score and an evaluation score are one number."""
    from gan_rl.cli.recipe import EvaluateSettings
    from gan_rl.eval.evaluation import compare

    real = [r["post"] for r in ROWS[:20]]
    generated = [" ".join(reversed(r["post"].split())) for r in ROWS[20:40]]
    settings = EvaluateSettings(folds=5, seed=3)
    embeddings = np.random.default_rng(0).normal(size=(20, 4))
    row = compare(real, embeddings, generated, embeddings + 1.0, settings)
    assert two_sample_ngram(real, generated, folds=5, seed=3) == row["two_sample_acc_ngram"]
    assert two_sample_ngram(real, real[::-1], folds=5, seed=3) <= 0.6  # the same texts: chance


def test_sampling_is_the_same_every_time_and_leaves_the_generators_alone(tiny_model_dir):
    """The fixed prompts are ``prompts`` of the validation rows, drawn once; sampled twice from the same
    weights they give the same texts; and torch's, Python's and NumPy's generators are where they were."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    callback = selection()
    topics = [r["topic"] for r in VALIDATION]
    assert len(callback.prompts) == 12 and len(callback.references) == 12
    rows = [i for i in range(len(VALIDATION)) if i in set(selection_module.fixed_rows(12, 16, 0))]
    assert callback.prompts == [topics[i] for i in rows]
    assert callback.references == [VALIDATION[i]["post"] for i in rows]
    assert selection().prompts == callback.prompts  # the same draw in another callback
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()
    first = callback.sample(model, tokenizer)
    second = callback.sample(model, tokenizer)
    after = torch.get_rng_state(), random.getstate(), np.random.get_state()
    assert first == second and len(first) == 12
    assert torch.equal(before[0], after[0]) and before[1] == after[1]
    assert all(np.array_equal(a, b) for a, b in zip(before[2][1:3], after[2][1:3], strict=True))


# --------------------------------------------------------------------------------------------------
# In training
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_scores_come_from_the_fixed_prompts_and_the_best_step_is_saved(tmp_path, tiny_model_dir, monkeypatch):
    """At every evaluation (step 0, then every step) the callback samples the same prompts with the same
    settings; each score is the two-sample accuracy of those samples against the prompts' real responses;
    the best step is the argmin of the curve (the first of equal scores), and ``best-by-samples/`` holds
    that step's weights, the tokenizer and a ``selection.json`` that says so. The curve and the cost are
    in the log history, and ``training_curves.png`` draws the curve."""
    from gan_rl.eval.plots import plot_training_curves

    calls: list[tuple[list, dict, list[str]]] = []
    real_sampler = selection_module.sample_completions

    def spy(model, tokenizer, prompts, batch_size, generate_kwargs, chat_template_kwargs=None):
        out = real_sampler(model, tokenizer, prompts, batch_size, generate_kwargs, chat_template_kwargs)
        calls.append((list(prompts), dict(generate_kwargs), [text.strip() for text, _ in out]))
        return out

    monkeypatch.setattr(selection_module, "sample_completions", spy)
    callback, weights = selection(), Weights()
    out = tmp_path / "out"
    trainer = sft_trainer(tiny_model_dir, out, [weights, callback], max_steps=5)
    trainer.train()

    assert list(callback.curve) == [0, 1, 2, 3, 4, 5]
    assert len(calls) == 6
    for prompts, kwargs, _ in calls:
        assert prompts == callback.prompts and kwargs == calls[0][1]
    assert calls[0][1]["do_sample"] is True and calls[0][1]["max_new_tokens"] == 6
    for (_, _, texts), score in zip(calls, callback.curve.values(), strict=True):
        assert score == two_sample_ngram(callback.references, texts, folds=5, seed=0)

    scores = list(callback.curve.values())
    best = list(callback.curve)[scores.index(min(scores))]
    assert callback.best_step == best and callback.best_score == min(scores)
    folder = out / SELECTION_DIR
    assert_same_tensors(load_tensors(folder / "model.safetensors"), weights.at[best])
    assert (folder / "tokenizer_config.json").is_file()
    saved = json.loads((folder / SELECTION_FILE).read_text())
    assert saved == read_selection(out) == json.loads(json.dumps(callback.summary()))
    assert saved["best_step"] == best and saved["best_score"] == min(scores)
    assert saved["curve"] == {str(k): v for k, v in callback.curve.items()}
    assert saved["samples_per_evaluation"] == 12 and set(saved["seconds"]) == set(saved["curve"])
    assert saved["seconds_per_evaluation"] > 0 and saved["path"] == str(folder)

    logged = [h for h in trainer.state.log_history if METRIC in h]
    assert {h["step"]: h[METRIC] for h in logged} == callback.curve
    assert all(h["sample_select/samples"] == 12 and h["sample_select/seconds"] > 0 for h in logged)
    assert logged[-1]["sample_select/best_step"] == best
    assert plot_training_curves(trainer.state.log_history, tmp_path / "plots")


@pytest.mark.slow
def test_the_trainers_own_logs_are_kept(tmp_path, tiny_model_dir):
    """An evaluation at a logging step leaves the trainer's own log of that step (its loss) in place:
    ``CallbackHandler.on_log``, through which the callback reports, clears ``control.should_log``."""
    trainer = sft_trainer(tiny_model_dir, tmp_path / "out", [selection(eval_steps=1)], max_steps=3)
    trainer.train()
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [1, 2, 3]
    assert [h["step"] for h in trainer.state.log_history if METRIC in h] == [0, 1, 2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("trainer_kind", ["sft", "grpo"])
def test_training_is_bit_identical_with_and_without_selection(tmp_path, tiny_model_dir, trainer_kind):
    """Sampling between steps restores every generator, so the run ends with the same weights bit for bit
    as without selection. SFT with attention dropout and past an epoch boundary (a reshuffle), GRPO whose
    own sampling draws from the generator at every step. A callback that draws one number from torch's
    generator per step does change the result: the comparison can fail."""
    steps = 7 if trainer_kind == "sft" else 3  # SFT: 48 rows / 8 = 6 steps per epoch
    build = (lambda out, cbs: sft_trainer(tiny_model_dir, out, cbs, max_steps=steps, dropout=0.2)) if (
        trainer_kind == "sft") else (lambda out, cbs: grpo_trainer(tiny_model_dir, out, cbs, max_steps=steps))  # fmt: skip
    runs = {}
    for name, callbacks in (
        ("plain", []),
        ("selected", [selection(eval_steps=2)]),
        ("disturbed", [Disturb()]),
    ):
        trainer = build(tmp_path / name, callbacks)
        trainer.train()
        runs[name] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        if name == "selected":  # every 2 steps, at the start and at the last step
            assert list(callbacks[0].curve) == ([0, 2, 4, 6, 7] if trainer_kind == "sft" else [0, 2, 3])
    for name, tensor in runs["plain"].items():
        assert torch.equal(tensor, runs["selected"][name]), name
    assert any(not torch.equal(t, runs["disturbed"][k]) for k, t in runs["plain"].items())


@pytest.mark.slow
def test_lora_samples_through_the_adapter_and_saves_it(tmp_path, tiny_model_dir, monkeypatch):
    """Under LoRA the model sampled is the PEFT model (its adapter active) and ``best-by-samples/`` holds the
    adapter of the best step, not a full model."""
    from peft import PeftModel

    sampled_with: list[type] = []
    real_sampler = selection_module.sample_completions

    def spy(model, *args, **kwargs):
        sampled_with.append(type(model))
        return real_sampler(model, *args, **kwargs)

    monkeypatch.setattr(selection_module, "sample_completions", spy)
    callback, weights = selection(at_start=False), Weights()
    out = tmp_path / "out"
    sft_trainer(tiny_model_dir, out, [weights, callback], max_steps=2, lora=True).train()
    assert sampled_with and all(issubclass(t, PeftModel) for t in sampled_with)
    folder = out / SELECTION_DIR
    assert (folder / "adapter_config.json").is_file() and not (folder / "model.safetensors").exists()
    assert_same_tensors(load_tensors(folder / "adapter_model.safetensors"), weights.at[callback.best_step])


@pytest.mark.slow
def test_resume_selects_what_the_uninterrupted_run_selects(tmp_path, tiny_model_dir):
    """A run stopped after step 5 (checkpoints at 2 and 4; step 5 already evaluated and perhaps saved as
    the best) and resumed from checkpoint-4 ends with the uninterrupted run's curve, best step and score,
    and the same weights in ``best-by-samples/``."""
    config = {"save_strategy": "steps", "save_steps": 2}
    full = selection()
    sft_trainer(tiny_model_dir, tmp_path / "full", [full], max_steps=6, **config).train()

    cut = tmp_path / "cut"
    sft_trainer(tiny_model_dir, cut, [selection(), StopAt(5)], max_steps=6, **config).train()
    state = json.loads((cut / "checkpoint-4" / STATE_FILE).read_text())
    assert list(state["curve"]) == ["0", "1", "2", "3", "4"]
    resumed = selection()
    sft_trainer(tiny_model_dir, cut, [resumed], max_steps=6, **config).train(
        resume_from_checkpoint=str(cut / "checkpoint-4")
    )
    assert resumed.curve == full.curve
    assert (resumed.best_step, resumed.best_score) == (full.best_step, full.best_score)
    assert_same_tensors(
        load_tensors(cut / SELECTION_DIR / "model.safetensors"),
        load_tensors(tmp_path / "full" / SELECTION_DIR / "model.safetensors"),
    )
    assert read_selection(cut)["curve"] == read_selection(tmp_path / "full")["curve"]


@pytest.mark.slow
def test_resume_puts_back_the_best_model_its_checkpoint_recorded(tmp_path, tiny_model_dir, monkeypatch):
    """The best model a checkpoint records survives a newer best found after it: checkpoint-4 records step
    2; step 5 becomes the best (saved; step 2's model is kept aside), then the run dies. Resumed from
    checkpoint-4 with step 5 scoring worse this time, the selection is step 2 again and
    ``best-by-samples/`` holds step 2's weights (checkpoint-2's). Scores are scripted per step, so the
    test does not hang on what a tiny model's samples score. A resume with other sampling settings is
    refused, naming the setting."""
    script = {0: 0.9, 1: 0.8, 2: 0.7, 3: 0.75, 4: 0.72, 5: 0.6}
    evaluations: list[int] = []

    def scripted(real, generated, folds=5, seed=0):
        return script[evaluations[-1]]

    real_evaluate = SampleSelectionCallback.evaluate

    def evaluate(self, args, state, control, model, tokenizer):
        evaluations.append(state.global_step)
        return real_evaluate(self, args, state, control, model, tokenizer)

    monkeypatch.setattr(selection_module, "two_sample_ngram", scripted)
    monkeypatch.setattr(SampleSelectionCallback, "evaluate", evaluate)
    config = {"save_strategy": "steps", "save_steps": 2}
    out = tmp_path / "out"
    first = selection()
    sft_trainer(tiny_model_dir, out, [first, StopAt(5)], max_steps=6, **config).train()
    assert first.best_step == 5
    assert read_selection(out)["best_step"] == 5
    aside = out / (SELECTION_DIR + CHECKPOINTED_SUFFIX)
    assert json.loads((aside / SELECTION_FILE).read_text())["best_step"] == 2

    other = selection(temperature=0.7)
    with pytest.raises(
        InputError, match=r"resume_from_checkpoint: .* other settings \(temperature: 1\.0 -> 0\.7\)"
    ):
        sft_trainer(tiny_model_dir, out, [other], max_steps=6, **config).train(
            resume_from_checkpoint=str(out / "checkpoint-4")
        )

    script.update({5: 0.95, 6: 0.95})
    resumed = selection()
    sft_trainer(tiny_model_dir, out, [resumed], max_steps=6, **config).train(
        resume_from_checkpoint=str(out / "checkpoint-4")
    )
    assert list(resumed.curve) == [0, 1, 2, 3, 4, 5, 6] and resumed.curve[5] == 0.95
    assert (resumed.best_step, resumed.best_score) == (2, 0.7)
    assert read_selection(out)["best_step"] == 2 and not aside.exists()
    assert_same_tensors(
        load_tensors(out / SELECTION_DIR / "model.safetensors"),
        load_tensors(out / "checkpoint-2" / "model.safetensors"),
    )


# --------------------------------------------------------------------------------------------------
# The plot
# --------------------------------------------------------------------------------------------------


def test_training_curves_draw_the_selection_curve_and_mark_the_best_step(tmp_path, monkeypatch):
    """``training_curves.png`` gets a panel with the score at each evaluation, chance at 0.5, and a line
    at the selected step (the first of equal minima, as the callback selects)."""
    from matplotlib.figure import Figure

    from gan_rl.eval import plots

    assert plots.SAMPLE_SELECTION_KEY == METRIC
    figures: list[Figure] = []
    real_savefig = Figure.savefig

    def savefig(self, *args, **kwargs):
        figures.append(self)
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    curve = {0: 0.9, 10: 0.7, 20: 0.65, 30: 0.8, 40: 0.65}
    history = [{"loss": 2.0 - 0.01 * s, "step": s} for s in range(1, 41)]
    history += [{METRIC: v, "sample_select/seconds": 1.5, "sample_select/samples": 12.0, "step": s}
                for s, v in curve.items()]  # fmt: skip
    written = plots.plot_training_curves(history, tmp_path)
    assert written == [tmp_path / plots.TRAINING_FILE] and written[0].is_file()
    (figure,) = figures
    (ax,) = [a for a in figure.axes if a.get_title().startswith("samples vs real responses")]
    lines = {line.get_label(): line for line in ax.get_lines()}
    drawn = lines["two-sample acc., n-gram"]
    assert list(drawn.get_xdata()) == list(curve) and list(drawn.get_ydata()) == list(curve.values())
    (selected,) = [line for label, line in lines.items() if label.startswith("selected (step 20")]
    assert list(selected.get_xdata()) == [20, 20]
    assert list(lines["chance (indistinguishable)"].get_ydata()) == [0.5, 0.5]
