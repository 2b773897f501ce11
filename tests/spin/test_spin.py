"""SPIN's mechanisms on a tiny model: the pairs (each real response against the model's own samples for the
same prompt), the reference (the policy at the start of the iteration, compared through the log-probabilities
it gave), the snapshot variant, and resume (bit-identical to the uninterrupted run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed

from gan_rl.trainer.spin import SpinConfig, SpinTrainer
from gan_rl.trainer.spin.layout import RunLayout
from gan_rl.trainer.spin.pairs import read_pairs, sample_rejected
from gan_rl.trainer.spin.trainer import ReferenceStoreDPOTrainer, sampling_seed
from tests.conftest import quickstart_texts

pytestmark = pytest.mark.slow

ROWS = 12
SETTINGS = {
    "iterations": 2,
    "samples_per_prompt": 2,
    "max_completion_length": 6,
    "generation_batch_size": 8,
    "max_steps": 4,
    "per_device_train_batch_size": 4,
    "learning_rate": 1e-3,
    "beta": 0.1,
    "save_steps": 2,
    "logging_steps": 1,
    "gradient_checkpointing": False,
    "bf16": False,  # TRL's default (on) is refused on a CPU
    "report_to": "none",
    "seed": 0,
}


def dataset(chat: bool = False) -> Dataset:
    """Quickstart topics and posts in TRL's prompt-completion format (prompt ending with a newline, so that
    prompt + completion splits into the same words as each alone)."""
    rows = quickstart_texts(ROWS)
    if chat:
        return Dataset.from_list(
            [
                {
                    "prompt": [{"role": "user", "content": r["topic"]}],
                    "completion": [{"role": "assistant", "content": r["post"]}],
                }
                for r in rows
            ]
        )
    return Dataset.from_list([{"prompt": r["topic"] + "\n", "completion": r["post"]} for r in rows])


def spin(model_dir: Path, out: Path, *, chat: bool = False, peft_config=None, callbacks=None, **settings):
    """A SpinTrainer on the tiny model (loaded fresh: full fine-tuning trains it in place)."""
    args = SpinConfig(output_dir=str(out), **{**SETTINGS, **settings})
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return SpinTrainer(
        model,
        args=args,
        train_dataset=dataset(chat),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=peft_config,
        callbacks=callbacks,
    )


def lora() -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


# The two runs the tests compare with: full fine-tuning on plain prompts (2 samples per prompt), and LoRA
# on chat prompts (1 sample per prompt).
KINDS = {
    "full": {},
    "lora": {"chat": True, "samples_per_prompt": 1},
}


def spin_kind(kind: str, model_dirs: dict[str, Path], out: Path, **kw) -> SpinTrainer:
    chat = KINDS[kind].get("chat", False)
    settings = {k: v for k, v in KINDS[kind].items() if k != "chat"}
    peft_config = lora() if kind == "lora" else None
    return spin(model_dirs[kind], out, chat=chat, peft_config=peft_config, **settings, **kw)


@pytest.fixture(scope="module")
def model_dirs(tiny_model_dir, tiny_chat_model_dir) -> dict[str, Path]:
    return {"full": tiny_model_dir, "lora": tiny_chat_model_dir}


@pytest.fixture(scope="module")
def uninterrupted(model_dirs, tmp_path_factory) -> dict[str, tuple[Path, SpinTrainer]]:
    """Each kind's run, two iterations uninterrupted, its final policy saved in its output_dir."""
    runs = {}
    for kind in KINDS:
        out = tmp_path_factory.mktemp("spin") / kind
        trainer = spin_kind(kind, model_dirs, out)
        output = trainer.train()
        assert [s.iteration for s in output.iterations] == [1, 2] and output.global_step == 8
        assert not output.stopped
        trainer.save_model()
        runs[kind] = (out, trainer)
    return runs


@pytest.fixture(scope="module")
def full_run(uninterrupted) -> Path:
    return uninterrupted["full"][0]


@pytest.fixture(scope="module")
def lora_run(uninterrupted) -> tuple[Path, SpinTrainer]:
    return uninterrupted["lora"]


def completion_logps(model, tokenizer, pairs, side: str) -> torch.Tensor:
    """Sum of log p(completion | prompt) of each pair's ``side``, tokenized as TRL's DPOTrainer does (plain:
    prompt + completion + EOS; chat: the template), computed here with a plain forward pass."""
    model.eval()
    values = []
    for pair in pairs:
        completion = getattr(pair, side)
        if isinstance(pair.prompt, list):
            prompt = tokenizer.apply_chat_template(
                pair.prompt, tokenize=True, return_dict=True, add_generation_prompt=True
            )["input_ids"]
            full = tokenizer.apply_chat_template(pair.prompt + completion, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        else:
            prompt = tokenizer(text=pair.prompt)["input_ids"]
            full = tokenizer(text=pair.prompt + completion + tokenizer.eos_token)["input_ids"]
        # The completion starts where prompt and prompt + completion diverge (TRL's common_prefix_length).
        start = next((i for i, (a, b) in enumerate(zip(prompt, full, strict=False)) if a != b), len(prompt))
        ids = torch.tensor([full])
        with torch.no_grad():
            logps = model(ids).logits[0, :-1].float().log_softmax(-1)
        token_logps = logps.gather(1, ids[0, 1:, None])[:, 0]
        values.append(token_logps[start - 1 :].sum())
    return torch.stack(values)


def saved_reference(out: Path, k: int) -> dict[str, torch.Tensor]:
    return load_file(str(RunLayout(out).reference_file(k)))


def assert_same_weights(a: Path, b: Path, name: str = "model.safetensors") -> None:
    wa, wb = load_file(str(a / name)), load_file(str(b / name))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


# -- pairs --------------------------------------------------------------------------------------------


def test_pairs_are_each_real_response_against_its_own_prompts_samples(full_run, tiny_model_dir):
    """Iteration k's pairs: row r's prompt, row r's real response as chosen, and as rejected exactly what
    the policy at the start of iteration k samples for that prompt (re-sampled here with the iteration's
    seed: the initial model for k = 1, iteration 1's saved model for k = 2)."""
    layout, data = RunLayout(full_run), dataset()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = SpinConfig(output_dir=str(full_run), **SETTINGS)
    for k, start in ((1, tiny_model_dir), (2, layout.model_dir(1))):
        pairs = read_pairs(layout.pairs_file(k))
        assert len(pairs) == ROWS * 2
        assert [(p.row, p.sample) for p in pairs] == [(r, j) for r in range(ROWS) for j in range(2)]
        for pair in pairs:
            assert pair.prompt == data[pair.row]["prompt"]
            assert pair.chosen == data[pair.row]["completion"]
        set_seed(sampling_seed(0, k))
        model = AutoModelForCausalLM.from_pretrained(start)
        own = sample_rejected(model, tokenizer, [data[r]["prompt"] for r in range(ROWS)], 2, args)
        assert [p.rejected for p in pairs] == [text for text, _ in own]
        assert [p.ended for p in pairs] == [ended for _, ended in own]
    # A new iteration samples afresh (another model, another seed).
    first, second = (read_pairs(layout.pairs_file(k)) for k in (1, 2))
    assert [p.rejected for p in first] != [p.rejected for p in second]


# -- the reference --------------------------------------------------------------------------------------


def test_the_reference_is_the_policy_at_the_start_of_each_iteration(full_run, tiny_model_dir):
    """The reference log-probabilities DPO trained iteration k against are those of the model saved at the
    end of iteration k - 1 (the initial model for k = 1), and for k = 2 not the initial model's."""
    layout = RunLayout(full_run)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    previous = AutoModelForCausalLM.from_pretrained(layout.model_dir(1))
    for k, start in ((1, initial), (2, previous)):
        pairs = read_pairs(layout.pairs_file(k))
        saved = saved_reference(full_run, k)
        for side in ("chosen", "rejected"):
            expected = completion_logps(start, tokenizer, pairs, side)
            torch.testing.assert_close(saved[f"ref_{side}_logps"], expected, atol=1e-4, rtol=1e-5)
    pairs = read_pairs(layout.pairs_file(2))
    from_initial = completion_logps(initial, tokenizer, pairs, "chosen")
    assert (saved_reference(full_run, 2)["ref_chosen_logps"] - from_initial).abs().max() > 1e-2
    # The iteration trained: its model is not the one it started from.
    assert not torch.equal(
        load_file(str(layout.model_dir(1) / "model.safetensors"))["lm_head.weight"],
        load_file(str(layout.model_dir(2) / "model.safetensors"))["lm_head.weight"],
    )


def test_with_lora_the_previous_iterates_adapter_is_the_reference(lora_run, tiny_chat_model_dir):
    """LoRA: one adapter trained through the iterations on an unchanged base; iteration 2's reference is the
    base with iteration 1's saved adapter (TRL's frozen "ref" copy of it), not the base. Conversational
    prompts: the pairs are chat messages, the rejected side one assistant message. The final policy is the
    last adapter merged into the base."""
    from peft import PeftModel

    out, trainer = lora_run
    layout = RunLayout(out)
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    for k in (1, 2):  # adapters only: the base never changes
        assert (layout.model_dir(k) / "adapter_model.safetensors").is_file()
        assert not (layout.model_dir(k) / "model.safetensors").exists()
        assert not (layout.model_dir(k) / "ref").exists()  # TRL's reference copy is not saved
    pairs = read_pairs(layout.pairs_file(2))
    assert pairs[0].prompt == dataset(chat=True)[pairs[0].row]["prompt"]
    assert pairs[0].rejected[0]["role"] == "assistant" and len(pairs[0].rejected) == 1
    base = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir)
    from_base = completion_logps(base, tokenizer, pairs, "chosen")
    previous = PeftModel.from_pretrained(base, str(layout.model_dir(1)))
    saved = saved_reference(out, 2)
    for side in ("chosen", "rejected"):
        expected = completion_logps(previous, tokenizer, pairs, side)
        torch.testing.assert_close(saved[f"ref_{side}_logps"], expected, atol=1e-4, rtol=1e-5)
    assert (saved["ref_chosen_logps"] - from_base).abs().max() > 1e-3
    # The final policy: an ordinary model, iteration 2's adapter merged into the base.
    assert not hasattr(trainer.model, "peft_config")
    last = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir), str(layout.model_dir(2))
    )
    merged = last.merge_and_unload().state_dict()
    for name, param in trainer.model.state_dict().items():
        torch.testing.assert_close(param, merged[name], atol=1e-6, rtol=0)


# -- snapshot ---------------------------------------------------------------------------------------------


def test_snapshot_reuses_the_first_iterations_samples_against_a_moving_reference(
    full_run, tiny_model_dir, tmp_path
):
    out = tmp_path / "snapshot"
    output = spin(tiny_model_dir, out, snapshot=True).train()
    layout = RunLayout(out)
    assert [s.reused_samples for s in output.iterations] == [False, True]
    first, second = read_pairs(layout.pairs_file(1)), read_pairs(layout.pairs_file(2))
    assert second == first
    # Iteration 1 is SPIN's own (same seed, same model): the snapshot is the starting model's samples.
    assert first == read_pairs(RunLayout(full_run).pairs_file(1))
    # Same pairs, new reference: the policy after iteration 1 scores them differently.
    a, b = saved_reference(out, 1), saved_reference(out, 2)
    assert (a["ref_chosen_logps"] - b["ref_chosen_logps"]).abs().max() > 1e-2
    assert output.iterations[1].sampling_seconds < output.iterations[0].sampling_seconds + 5


# -- resume -----------------------------------------------------------------------------------------------


class Crash(Exception):
    """A process killed mid-iteration (after a checkpoint, before the iteration was done)."""


class CrashAt(TrainerCallback):
    def __init__(self, iteration: int, step: int) -> None:
        self.iteration, self.step = iteration, step

    def on_step_end(self, args, state, control, **kwargs):
        if Path(args.output_dir).name == f"iteration-{self.iteration}" and state.global_step == self.step:
            raise Crash


class StopAt(TrainerCallback):
    """A graceful stop (as a SIGTERM's PreemptionCallback does): a checkpoint after the step, then the end."""

    def __init__(self, iteration: int, step: int) -> None:
        self.iteration, self.step = iteration, step

    def on_step_end(self, args, state, control, **kwargs):
        if Path(args.output_dir).name == f"iteration-{self.iteration}" and state.global_step == self.step:
            control.should_save = control.should_training_stop = True
        return control


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_run_killed_mid_iteration_resumes_to_the_bit_identical_result(
    kind, uninterrupted, model_dirs, tmp_path, monkeypatch
):
    """Killed at step 3 of iteration 2 (its checkpoint-2 written), the resumed run skips iteration 1,
    continues iteration 2 from checkpoint-2 with the saved pairs and reference log-probabilities (not
    scored again), and ends with the uninterrupted run's weights, every tensor equal (LoRA: each
    iteration's adapter and the merged final policy)."""
    full, _ = uninterrupted[kind]
    out = tmp_path / "cut"
    with pytest.raises(Crash):
        spin_kind(kind, model_dirs, out, callbacks=[CrashAt(2, 3)]).train()
    layout = RunLayout(out)
    assert layout.last_done() == 1 and (layout.iteration_dir(2) / "checkpoint-2").is_dir()

    scored = []
    original = ReferenceStoreDPOTrainer.compute_ref_log_probs
    monkeypatch.setattr(
        ReferenceStoreDPOTrainer,
        "compute_ref_log_probs",
        lambda self, *a: scored.append(1) or original(self, *a),
    )
    resumed = spin_kind(kind, model_dirs, out)
    output = resumed.train(resume_from_checkpoint=True)
    assert scored == [] and resumed.trainer.reference_reused
    assert output.iterations[1].resumed_from == str(layout.iteration_dir(2) / "checkpoint-2")
    assert output.global_step == 8 and not output.stopped
    weights = "adapter_model.safetensors" if kind == "lora" else "model.safetensors"
    for k in (1, 2):
        assert read_pairs(layout.pairs_file(k)) == read_pairs(RunLayout(full).pairs_file(k))
        assert_same_weights(layout.model_dir(k), RunLayout(full).model_dir(k), weights)
    resumed.save_model()
    assert_same_weights(out, full)


def test_a_run_stopped_in_iteration_one_resumes_to_the_bit_identical_result(
    full_run, tiny_model_dir, tmp_path
):
    """A graceful stop (a callback ends training after a checkpoint) in iteration 1: train() returns
    ``stopped`` with the iteration not done; resuming continues it from that checkpoint, then samples
    and trains iteration 2 as the uninterrupted run did."""
    out = tmp_path / "stopped"
    output = spin(tiny_model_dir, out, callbacks=[StopAt(1, 3)]).train()
    layout = RunLayout(out)
    assert output.stopped and output.iterations == [] and layout.last_done() == 0
    assert (layout.iteration_dir(1) / "checkpoint-3").is_dir() and not layout.pairs_file(2).exists()
    output = spin(tiny_model_dir, out).train(resume_from_checkpoint=True)
    assert output.iterations[0].resumed_from.endswith("iteration-1/checkpoint-3")
    for k in (1, 2):
        assert read_pairs(layout.pairs_file(k)) == read_pairs(RunLayout(full_run).pairs_file(k))
        assert_same_weights(layout.model_dir(k), RunLayout(full_run).model_dir(k))


def test_a_stop_between_iterations_leaves_the_next_one_unsampled_and_resumes(
    full_run, tiny_model_dir, tmp_path
):
    """``stop_requested`` (what a SIGTERM handler sets) is asked before each iteration: true after
    iteration 1, the run returns ``stopped`` before sampling iteration 2; resumed, it ends as the
    uninterrupted run did."""
    out = tmp_path / "between"
    trainer = spin(tiny_model_dir, out)
    asked = []
    trainer.stop_requested = lambda: asked.append(1) or len(asked) > 1
    output = trainer.train()
    layout = RunLayout(out)
    assert output.stopped and [s.iteration for s in output.iterations] == [1]
    assert layout.last_done() == 1 and not layout.iteration_dir(2).exists()
    output = spin(tiny_model_dir, out).train(resume_from_checkpoint=True)
    assert [s.iteration for s in output.iterations] == [1, 2] and output.iterations[1].resumed_from is None
    assert_same_weights(layout.model_dir(2), RunLayout(full_run).model_dir(2))


def test_a_finished_run_resumes_to_its_final_model_and_a_fresh_run_refuses_its_folder(
    full_run, tiny_model_dir
):
    """Resuming a finished run trains nothing and holds its final policy; a fresh run into the same folder
    is refused before anything is written (resume or another output_dir: nothing is deleted)."""
    done = spin(tiny_model_dir, full_run)
    output = done.train(resume_from_checkpoint=True)
    assert [s.iteration for s in output.iterations] == [1, 2] and output.global_step == 8
    assert done.trainer is None
    final = load_file(str(RunLayout(full_run).model_dir(2) / "model.safetensors"))
    for name, param in done.model.state_dict().items():
        assert torch.equal(param, final[name]), name
    with pytest.raises(ValueError, match="already holds a SPIN run"):
        spin(tiny_model_dir, full_run).train()
    # The log history of both iterations, on one step axis.
    history = done.log_history
    steps = [h["step"] for h in history if "loss" in h]
    assert steps == list(range(1, 9))
    assert {h["iteration"] for h in history} == {1, 2}
