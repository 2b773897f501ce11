"""gan-rl as a library: TRL's own GRPOTrainer and RLOOTrainer, built by the test, rewarded and called back
by an :class:`gan_rl.Adversary` (the Python API of docs/python-api.md, with no recipe and no CLI)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from tests.conftest import SMALL_DISCRIMINATOR as SMALL_HEAD
from tests.conftest import quickstart_texts

pytestmark = pytest.mark.slow

TRAINER_ARGS = {
    "per_device_train_batch_size": 8,
    "num_generations": 4,
    "max_completion_length": 6,
    "learning_rate": 1e-3,
    "logging_steps": 1,
    "report_to": "none",
    "seed": 0,
    # TRL turns bf16 autocast on by default, which transformers refuses on a CPU (and which is slow on
    # one without native bf16): on only where a CUDA device has it.
    "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
}


class StopAt(TrainerCallback):
    """Ends training after step ``step`` (its checkpoint is written first): an interrupted run with the
    uninterrupted run's settings (a shorter ``max_steps`` would change the learning-rate schedule)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def plain_trl_trainer(
    model_dir: Path,
    out: Path,
    algorithm: str = "grpo",
    max_steps: int = 4,
    trainer_class: type | None = None,
    callbacks: list | None = None,
    config: dict | None = None,
    **trainer_kwargs,
):
    """The docs' example, as a user writes it, up to ``attach``: TRL's trainer with gan-rl's reward and
    callback (``config``: more of TRL's config fields)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from gan_rl import Adversary, DiscriminatorConfig, adversarial_dataset

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = Dataset.from_list(quickstart_texts(64))
    train = adversarial_dataset(rows, tokenizer, prompt_column="topic", response_column="post")
    adversary = Adversary.build(DiscriminatorConfig(**SMALL_HEAD), model, tokenizer, real=train)
    config_class, default_trainer = (
        (GRPOConfig, GRPOTrainer) if algorithm == "grpo" else (RLOOConfig, RLOOTrainer)
    )
    fields = {"save_strategy": "steps", "save_steps": 2, **TRAINER_ARGS, **(config or {})}
    args = config_class(output_dir=str(out), max_steps=max_steps, **fields)
    trainer = (trainer_class or default_trainer)(
        model=model,
        reward_funcs=[adversary.reward],
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        callbacks=[adversary.callback, *(callbacks or [])],
        **trainer_kwargs,
    )
    return trainer, adversary


def plain_trl_run(
    model_dir: Path,
    out: Path,
    algorithm: str = "grpo",
    max_steps: int = 4,
    resume: str | None = None,
    attach: bool = True,
    trainer_class: type | None = None,
    stop_at: int | None = None,
    **trainer_kwargs,
):
    """:func:`plain_trl_trainer`, attached and trained (stopped after step ``stop_at`` if given)."""
    callbacks = [StopAt(stop_at)] if stop_at else []
    trainer, adversary = plain_trl_trainer(
        model_dir, out, algorithm, max_steps, trainer_class, callbacks, **trainer_kwargs
    )
    if attach:
        adversary.attach(trainer)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, adversary


def logged(trainer, name: str) -> list[float]:
    return [h[name] for h in trainer.state.log_history if name in h]


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_plain_trl_trainer_trains_with_the_adversary(tmp_path, tiny_model_dir, algorithm):
    from gan_rl.trainer.callback import DISCRIMINATOR_DIR

    torch.manual_seed(0)
    trainer, adversary = plain_trl_run(tiny_model_dir, tmp_path / "out", algorithm)
    initial = adversary.callback.warmup_stats
    assert trainer.state.global_step == 4
    # The discriminator warmed up and then trained (or the guard skipped) one round per policy update.
    assert initial and adversary.disc_trainer.rounds + adversary.disc_trainer.skipped_rounds == 1 + 4
    # Its statistics and the reward reached TRL's logs (trainer._metrics, averaged at each log).
    assert len(logged(trainer, "disc/loss")) == 4
    assert len(logged(trainer, "rewards/discriminator/mean")) == 4
    # Every checkpoint holds the discriminator beside TRL's files.
    for step in (2, 4):
        folder = tmp_path / "out" / f"checkpoint-{step}" / DISCRIMINATOR_DIR
        assert (folder / "state.json").is_file() and (folder / "model.safetensors").is_file()


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_plain_trl_resume_restores_the_discriminator_bit_for_bit(tmp_path, tiny_model_dir, algorithm):
    """TRL's own resume (``resume_from_checkpoint``) continues the discriminator where the checkpoint left
    it: the resumed run ends with the uninterrupted run's discriminator and policy, bit for bit."""
    full, full_adv = plain_trl_run(tiny_model_dir, tmp_path / "full", algorithm)
    plain_trl_run(tiny_model_dir, tmp_path / "cut", algorithm, stop_at=2)
    checkpoint = str(tmp_path / "cut" / "checkpoint-2")
    resumed, resumed_adv = plain_trl_run(tiny_model_dir, tmp_path / "cut", algorithm, resume=checkpoint)
    assert resumed_adv.callback.restored["path"].startswith(checkpoint)
    assert resumed_adv.callback.warmup_stats == {}  # restored, not warmed up again
    assert resumed_adv.disc_trainer.fingerprint() == full_adv.disc_trainer.fingerprint()
    for (name, a), (_, b) in zip(
        full.model.named_parameters(), resumed.model.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name


def test_attach_warns_of_checkpoints_inside_the_generation_cycle(tmp_path, tiny_model_dir, caplog):
    """With ``num_iterations`` 2 TRL keeps a cycle's samples in memory only: a checkpoint at an odd step
    would resume with fresh samples. ``attach`` says so, naming the setting and a valid one; at a multiple
    of the cycle it says nothing."""
    for save_steps, warned in ((3, True), (4, False)):
        config = {"num_iterations": 2, "save_steps": save_steps}
        trainer, adversary = plain_trl_trainer(tiny_model_dir, tmp_path / str(save_steps), config=config)
        caplog.clear()
        with caplog.at_level("WARNING", logger="gan_rl.trainer.adversary"):
            adversary.attach(trainer)
        messages = [r.getMessage() for r in caplog.records if "save_steps" in r.getMessage()]
        if warned:
            assert len(messages) == 1 and "save_steps 3 puts checkpoints inside" in messages[0]
            assert "use a multiple of 2" in messages[0]
        else:
            assert messages == []


def test_forgetting_attach_is_one_clear_error(tmp_path, tiny_model_dir):
    with pytest.raises(RuntimeError, match=r"not attached to a trainer; call adversary.attach\(trainer\)"):
        plain_trl_run(tiny_model_dir, tmp_path / "out", max_steps=1, attach=False)


def test_the_reward_alone_refuses_before_attach(tiny_model_dir):
    """A user who hands the reward to a trainer without the callback hears it at the first reward call."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gan_rl import Adversary, DiscriminatorConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    adversary = Adversary.build(DiscriminatorConfig(**SMALL_HEAD), model, tokenizer)
    with pytest.raises(RuntimeError, match="adversary.attach"):
        adversary.reward(["a topic"], ["a post"], prompt_text=["a topic"], real_response=["a real post"])


def test_attach_checks_the_reward_and_callback_are_the_trainers(tmp_path, tiny_model_dir):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from gan_rl import Adversary, DiscriminatorConfig, adversarial_dataset

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    train = adversarial_dataset(
        Dataset.from_list(quickstart_texts(16)), tokenizer, prompt_column="topic", response_column="post"
    )
    adversary = Adversary.build(DiscriminatorConfig(**SMALL_HEAD), model, tokenizer, real=train)
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=1, **TRAINER_ARGS)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[adversary.reward],
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match="adversary.callback is not among the trainer's callbacks"):
        adversary.attach(trainer)


def test_adversarial_trainer_adds_the_sft_term(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from gan_rl import AdversarialGRPOTrainer, RealResponseLoss
    from gan_rl.types import Pair

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    real = [Pair(r["topic"], r["topic"], r["post"]) for r in quickstart_texts(16)]
    term = RealResponseLoss(tokenizer, real, coef=0.5, batch_size=4, seed=0)
    trainer, _ = plain_trl_run(
        tiny_model_dir,
        tmp_path / "out",
        max_steps=2,
        trainer_class=AdversarialGRPOTrainer,
        real_response_loss=term,
    )
    assert trainer.real_response_loss is term
    sft = logged(trainer, "sft/loss")
    assert len(sft) == 2 and all(v > 0 for v in sft)


def test_python_config_with_a_bad_field_raises_at_construction():
    from gan_rl import DiscriminatorConfig, DiscriminatorRewardConfig

    with pytest.raises(ValueError, match=r"DiscriminatorConfig\.learning_rate: expected positive, got -1"):
        DiscriminatorConfig(learning_rate=-1)
    with pytest.raises(ValueError, match=r"DiscriminatorConfig\.d_model: only kind 'head' reads it"):
        DiscriminatorConfig(kind="adapter", d_model=64)
    with pytest.raises(ValueError, match=r"DiscriminatorRewardConfig\.clip: expected \[low, high\]"):
        DiscriminatorConfig(reward={"clip": [1.0, -1.0]})
    assert DiscriminatorConfig(reward={"form": "prob"}).reward == DiscriminatorRewardConfig(form="prob")


def test_the_configs_parse_from_the_command_line_as_trls_do():
    """``HfArgumentParser`` (what TRL's scripts use) parses DiscriminatorConfig and its reward config, every
    field with its help; the reward config's name does not clash with ``trl.RewardConfig``."""
    from transformers import HfArgumentParser

    import gan_rl
    from gan_rl import DiscriminatorConfig, DiscriminatorRewardConfig

    parser = HfArgumentParser((DiscriminatorConfig, DiscriminatorRewardConfig))
    help_text = parser.format_help()
    assert "--encoder_layer" in help_text and "Which hidden layer of the encoder" in help_text
    assert "--length_coef" in help_text
    disc, reward = parser.parse_args_into_dataclasses(
        ["--loss", "bradley_terry", "--encoder_layer", "15", "--form", "prob", "--clip", "-5", "5"]
    )
    config = DiscriminatorConfig(**{**vars(disc), "reward": reward})
    assert config.loss == "bradley_terry" and config.encoder_layer == 15
    assert config.reward == DiscriminatorRewardConfig(form="prob", clip=[-5.0, 5.0])
    assert "RewardConfig" not in gan_rl.__all__
    for cls in (DiscriminatorConfig, DiscriminatorRewardConfig):
        assert all(f.metadata.get("help") for f in dataclasses.fields(cls)), cls


def test_adversarial_dataset_names_a_missing_column():
    from datasets import Dataset

    from gan_rl import adversarial_dataset

    rows = Dataset.from_list([{"topic": "t", "post": "p"}])
    with pytest.raises(ValueError, match=r"no column 'prompt'; the dataset has \['topic', 'post'\]"):
        adversarial_dataset(rows, response_column="post")
    plain = adversarial_dataset(rows, prompt_column="topic", response_column="post", chat=False)
    assert plain[0] == {"prompt": "t", "prompt_text": "t", "real_response": "p"}
    chat = adversarial_dataset(rows, prompt_column="topic", response_column="post", chat=True)
    assert chat[0]["prompt"] == [{"role": "user", "content": "t"}]


def test_the_docs_example_runs_as_written(tmp_path, tiny_model_dir):
    """examples/plain_trl.py (docs/python-api.md's example) trains, checkpoints the discriminator and
    saves the model; here on the tiny model for 2 steps (the closing note of issue 18 ran it on SmolLM2)."""
    import runpy

    from tests.conftest import ROOT

    example = runpy.run_path(str(ROOT / "examples" / "plain_trl.py"), run_name="example")
    out = tmp_path / "out"
    data = tmp_path / "posts.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in quickstart_texts(64)))
    columns = ["--prompt-column", "topic", "--response-column", "post"]
    example["main"](
        [str(tiny_model_dir), "--data", str(data), *columns, "--max-steps", "2", "--output-dir", str(out)]
    )
    assert (out / "model.safetensors").is_file()


def owning_trainer(tmp_path, tiny_model_dir, trainer_class, **kwargs):
    """The trainer that builds its own adversary (issue 29): a model id (here a local folder) and a
    DiscriminatorConfig, as TRL's trainers take a model id and a config."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, RLOOConfig

    from gan_rl import AdversarialGRPOTrainer, DiscriminatorConfig, adversarial_dataset

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    train = adversarial_dataset(
        Dataset.from_list(quickstart_texts(64)), tokenizer, prompt_column="topic", response_column="post"
    )
    config_class = GRPOConfig if trainer_class is AdversarialGRPOTrainer else RLOOConfig
    args = config_class(output_dir=str(tmp_path / "out"), max_steps=2, save_steps=2, **TRAINER_ARGS)
    return trainer_class(
        model=str(tiny_model_dir),
        args=args,
        train_dataset=train,
        discriminator=DiscriminatorConfig(**SMALL_HEAD),
        **kwargs,
    )


@pytest.mark.parametrize("name", ["AdversarialGRPOTrainer", "AdversarialRLOOTrainer"])
def test_the_trainer_owns_its_adversary(tmp_path, tiny_model_dir, name):
    """From a model id and a DiscriminatorConfig the trainer loads the model and tokenizer, builds the
    adversary, puts its reward first and its callback among the callbacks, attaches it, and trains: the
    discriminator warms up and trains, its statistics and the SFT term reach the logs, checkpoints hold it."""
    import gan_rl

    torch.manual_seed(0)
    trainer = owning_trainer(tmp_path, tiny_model_dir, getattr(gan_rl, name), sft_loss_coef=0.5)
    adversary = trainer.adversary
    assert trainer.reward_funcs[0] is adversary.reward
    assert adversary.callback in trainer.callback_handler.callbacks
    assert adversary.trainer is trainer and adversary.attach(trainer) is adversary  # attached once
    before = adversary.disc_trainer.fingerprint()
    trainer.train()
    assert adversary.callback.warmup_stats
    assert adversary.disc_trainer.fingerprint() != before
    assert len(logged(trainer, "disc/loss")) == 2
    assert all(v > 0 for v in logged(trainer, "sft/loss"))
    assert (tmp_path / "out" / "checkpoint-2" / "discriminator" / "model.safetensors").is_file()


def test_the_owning_trainer_refuses_two_adversaries(tmp_path, tiny_model_dir):
    from gan_rl import AdversarialGRPOTrainer

    with pytest.raises(ValueError, match="pass discriminator= .* or adversary=, not both"):
        owning_trainer(tmp_path, tiny_model_dir, AdversarialGRPOTrainer, adversary=object())
