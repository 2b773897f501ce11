"""The algorithm registry, and the one place that writes into TRL's private ``_metrics``."""

from __future__ import annotations

import inspect
import re
from collections import defaultdict

import pytest

from gan_rl.cli.algorithms import ALGORITHMS, get_algorithm
from gan_rl.errors import RecipeError
from gan_rl.trainer.sft_term import RealResponseLossMixin
from gan_rl.trainer.trl_internals import metric_logger


def test_registry_maps_each_algorithm_to_its_classes():
    from transformers import Trainer, TrainingArguments
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from gan_rl.gumbel.config import GumbelConfig
    from gan_rl.gumbel.trainer import GumbelTrainer, RelaxedTokensTrainer

    expected = {
        "ppo": (GRPOConfig, GRPOTrainer),
        "reinforce": (RLOOConfig, RLOOTrainer),
        "gumbel": (GumbelConfig, RelaxedTokensTrainer),
    }
    assert set(ALGORITHMS) == set(expected)
    for name, (config, trainer) in expected.items():
        algorithm = get_algorithm(name)
        assert algorithm.config_class() is config
        cls = algorithm.trainer_class()
        assert issubclass(cls, trainer) and issubclass(cls, RealResponseLossMixin)
        # The SFT term's compute_loss wraps the trainer's own.
        assert cls.__mro__.index(RealResponseLossMixin) < cls.__mro__.index(trainer)
    # gan_rl's own algorithm is a transformers Trainer configured by a TrainingArguments subclass.
    assert issubclass(GumbelTrainer, Trainer) and issubclass(GumbelConfig, TrainingArguments)
    assert get_algorithm("gumbel").trainer_module == "gan_rl.gumbel"
    # TRL's names for the two policy-gradient commands.
    assert get_algorithm("grpo") is get_algorithm("ppo") and get_algorithm("rloo") is get_algorithm(
        "reinforce"
    )


def test_unknown_algorithm_is_one_recipe_error():
    with pytest.raises(RecipeError, match=r"algorithm: 'dpo' is not valid; valid: ppo, reinforce, gumbel"):
        get_algorithm("dpo")


def test_metric_logger_appends_to_the_training_metrics():
    trainer = type("T", (), {})()
    assert metric_logger(trainer) is None  # no TRL metrics: the callback keeps its logs for on_log
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    log = metric_logger(trainer)
    log("disc/loss", 0.5)
    log("disc/loss", 0.25)
    assert trainer._metrics["train"]["disc/loss"] == [0.5, 0.25] and not trainer._metrics["eval"]


def test_gumbel_trainer_keeps_metrics_where_metric_logger_writes(monkeypatch):
    """GumbelTrainer keeps TRL's ``_metrics`` layout itself, and its ``log`` averages and clears them."""
    from gan_rl.gumbel.trainer import GumbelTrainer

    trainer = GumbelTrainer.__new__(GumbelTrainer)
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer.model = type("M", (), {"training": True})()
    metric_logger(trainer)("disc/loss", 0.5)
    metric_logger(trainer)("disc/loss", 0.25)
    seen = {}
    monkeypatch.setattr("transformers.Trainer.log", lambda self, logs, start_time=None: seen.update(logs))
    trainer.log({"loss": 1.0})
    assert seen == {"loss": 1.0, "disc/loss": 0.375} and not trainer._metrics["train"]


@pytest.mark.parametrize("name", sorted(n for n, a in ALGORITHMS.items() if a.config_module == "trl"))
def test_trl_trainers_keep_metrics_where_metric_logger_writes(name):
    """metric_logger writes into TRL's private ``_metrics``; if this fails, TRL changed it: the
    discriminator's and the SFT term's logs would vanish (or raise), so adapt metric_logger."""
    import trl

    cls = getattr(trl, ALGORITHMS[name].config.replace("Config", "Trainer"))  # TRL's own trainer
    init = inspect.getsource(cls.__init__)
    created = re.search(
        r"self\._metrics\s*=\s*\{\s*[\"']train[\"']\s*:\s*defaultdict\(list\)\s*,"
        r"\s*[\"']eval[\"']\s*:\s*defaultdict\(list\)\s*\}",
        init,
    )
    assert created, (
        f"TRL changed {cls.__name__}.__init__: it no longer creates "
        "self._metrics = {'train': defaultdict(list), 'eval': defaultdict(list)}; "
        "gan_rl.trainer.trl_internals.metric_logger writes there"
    )
    log = inspect.getsource(cls.log)
    assert re.search(r"for key, val in self\._metrics\[mode\]\.items\(\)", log) and re.search(
        r"self\._metrics\[mode\]\.clear\(\)", log
    ), (
        f"TRL changed {cls.__name__}.log: it no longer averages and clears self._metrics[mode]; "
        "the values gan_rl.trainer.trl_internals.metric_logger appends would not be logged"
    )


def test_trl_names_are_commands_for_the_same_algorithms(recipe_factory):
    """``gan-rl grpo`` / ``gan-rl rloo`` are ``ppo`` / ``reinforce`` under TRL's names: the same command,
    the same recipe section (``ppo.beta`` is read by ``grpo``)."""
    from click.testing import CliRunner

    from gan_rl.cli.main import main

    runner = CliRunner()
    for alias, name in (("grpo", "ppo"), ("rloo", "reinforce")):
        result = runner.invoke(main, [alias, "--help"])
        assert result.exit_code == 0 and f"TRL's name for 'gan-rl {name}'" in result.output
    path = str(recipe_factory(ppo={"beta": 0.2}))
    result = runner.invoke(main, ["check", path, "--algorithm", "grpo"])
    assert result.exit_code == 0, result.output
