"""Hostile recipes and data, as a user would run them: each row one command, one line, exit code 2, nothing
presented as finished (issue 26; the harness is :mod:`tests.cli.hostile`).

The first rows are the values TRL or torch would refuse only later, or that would train nothing while the
run says "completed" (a negative learning rate, ``max_steps: 0``, a training set smaller than one batch, a
completion longer than the generator's positions); ``gan-rl check`` must say so as the run does. The rest
replay, through a real ``python -m gan_rl`` process, the earlier bad-input cases of
``tests/cli/test_user_errors.py`` and ``tests/cli/test_recipe.py`` (which stay as they are).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.cli.hostile import Case, run_case
from tests.conftest import base_recipe, quickstart_texts, write_recipe

QUICKSTART = str(Path(__file__).resolve().parents[2] / "tests" / "recipes" / "random-init.yaml")


def recipe(model_dir: str | None = None, files: dict[str, str] | None = None, **sections):
    """A ``setup`` that writes the base recipe (with ``sections`` updated) as ``recipe.yaml``, its
    generator the tiny model (or ``model_dir``, relative to the row's directory), and ``files`` beside it."""

    def setup(tmp: Path, fixtures: dict) -> None:
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        model = tmp / model_dir if model_dir is not None else fixtures["tiny_model_dir"]
        write_recipe(tmp / "recipe.yaml", base_recipe(model, tmp / "out", **sections))

    return setup


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


ONE_ROW = jsonl(quickstart_texts(1))
MISSING_CLASSIFIER = {"kind": "classifier", "model": "./no-such-classifier"}


def binary_recipe(tmp: Path, fixtures: dict) -> None:
    (tmp / "recipe.yaml").write_bytes(b"model:\n  name_or_path: x\n\xff\xfe\x00\x01 binary")


def bad_yaml(tmp: Path, fixtures: dict) -> None:
    (tmp / "recipe.yaml").write_text("model: [unclosed")


def no_vllm() -> list:
    return [pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")]


CASES = [
    # -- values TRL or torch would refuse later, refused when the recipe is read ------------------------
    Case(
        "ppo-learning-rate-negative",
        ["ppo", "{recipe}", "--set", "trainer.learning_rate=-1"],
        2,
        ["trainer.learning_rate", "-1", "0 or a positive finite number"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "check-learning-rate-negative",
        ["check", "{recipe}", "--set", "trainer.learning_rate=-1"],
        2,
        ["trainer.learning_rate", "0 or a positive finite number"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "check-quickstart-learning-rate-negative",
        ["check", QUICKSTART, "--set", "trainer.learning_rate=-1", "--set", "trainer.output_dir={tmp}/out"],
        2,
        ["trainer.learning_rate"],
        output_absent=True,
    ),
    Case(
        "reinforce-learning-rate-nan",
        ["reinforce", "{recipe}", "--set", "reinforce.learning_rate=.nan"],
        2,
        ["reinforce.learning_rate", "nan"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "ppo-max-steps-0",
        ["ppo", "{recipe}", "--set", "trainer.max_steps=0"],
        2,
        ["trainer.max_steps", "got 0", "-1 (train num_train_epochs)"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "check-max-steps-0",
        ["check", "{recipe}", "--set", "trainer.max_steps=0"],
        2,
        ["trainer.max_steps", "got 0"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "gumbel-epochs-0",
        ["gumbel", "{recipe}", "--set", "trainer.max_steps=-1", "--set", "trainer.num_train_epochs=0"],
        2,
        ["trainer.num_train_epochs", "max_steps is -1"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "ppo-batch-size-0",
        ["ppo", "{recipe}", "--set", "trainer.per_device_train_batch_size=0"],
        2,
        ["trainer.per_device_train_batch_size", "at least 1"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "ppo-gradient-accumulation-0",
        ["ppo", "{recipe}", "--set", "trainer.gradient_accumulation_steps=0"],
        2,
        ["trainer.gradient_accumulation_steps", "at least 1"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "ppo-num-generations-0",  # a ZeroDivisionError inside TRL's own check before
        ["ppo", "{recipe}", "--set", "trainer.num_generations=0"],
        2,
        ["trainer.num_generations", "at least 2"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "ppo-seed-negative",  # numpy refuses it when the trainer seeds itself
        ["ppo", "{recipe}", "--set", "trainer.seed=-1"],
        2,
        ["trainer.seed", "2**32 - 1"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "ppo-temperature-0",
        ["ppo", "{recipe}", "--set", "ppo.temperature=0"],
        2,
        ["ppo.temperature", "positive"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "sft-learning-rate-negative",
        ["sft", "{recipe}", "--set", "sft.learning_rate=-1"],
        2,
        ["sft.learning_rate", "0 or a positive finite number"],
        recipe(),
        output_dir="out-sft",
        output_absent=True,
    ),
    Case(
        "check-sft-max-steps-0",
        ["check", "{recipe}", "--algorithm", "sft", "--set", "sft.max_steps=0"],
        2,
        ["sft.max_steps", "got 0"],
        recipe(),
        output_dir="out-sft",
        output_absent=True,
    ),
    Case(
        "gumbel-tau-start-0",
        ["gumbel", "{recipe}", "--set", "gumbel.tau_start=0"],
        2,
        ["gumbel.tau_start", "positive"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "spin-learning-rate-negative",
        ["spin", "{recipe}", "--set", "spin.learning_rate=-1"],
        2,
        ["spin.learning_rate", "0 or a positive finite number"],
        recipe(),
        output_dir="out-spin",
        output_absent=True,
    ),
    Case(
        "check-spin-iterations-0",
        ["check", "{recipe}", "--algorithm", "spin", "--set", "spin.iterations=0"],
        2,
        ["spin.iterations", "an integer >= 1"],
        recipe(),
        output_dir="out-spin",
        output_absent=True,
    ),
    Case(
        "sft-sample-selection-without-validation",  # it would select on data.test, which evaluate reports
        ["sft", "{recipe}", "--set", "sample_selection.eval_steps=10"],
        2,
        ["sample_selection", "data.validation", "data.validation_fraction"],
        recipe(),
        output_dir="out-sft",
        output_absent=True,
    ),
    # -- a training set too small for one batch (TRL drops an incomplete prompt batch: 0 steps) ----------
    Case(
        "ppo-one-row-train-file",
        ["ppo", "{recipe}"],
        2,
        ["data.train", "1 row", "2 prompts", "trainer.per_device_train_batch_size"],
        recipe(files={"one.jsonl": ONE_ROW}, data={"train": "one.jsonl"}),
        output_absent=True,
    ),
    Case(
        "reinforce-one-row-train-file",
        ["reinforce", "{recipe}"],
        2,
        ["data.train", "1 row", "2 prompts"],
        recipe(files={"one.jsonl": ONE_ROW}, data={"train": "one.jsonl"}),
        output_absent=True,
    ),
    Case(
        "check-one-row-train-file",  # check says what the run would: a file's rows are known once read
        ["check", "{recipe}"],
        2,
        ["data.train", "1 row", "2 prompts"],
        recipe(files={"one.jsonl": ONE_ROW}, data={"train": "one.jsonl"}),
        output_absent=True,
    ),
    Case(
        "check-max-train-samples-1",
        ["check", "{recipe}", "--set", "data.max_train_samples=1"],
        2,
        ["data.train", "data.max_train_samples", "2 prompts"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "check-synthetic-rows-1",
        ["check", "{recipe}", "--algorithm", "reinforce", "--set", "data.train.rows=1"],
        2,
        ["data.train", "data.train.rows", "2 prompts"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "sft-one-row-drop-last",  # SFT trains on a smaller last batch, unless it is dropped
        ["sft", "{recipe}", "--set", "sft.dataloader_drop_last=true"],
        2,
        ["data.train", "1 row", "sft.dataloader_drop_last"],
        recipe(files={"one.jsonl": ONE_ROW}, data={"train": "one.jsonl"}),
        output_dir="out-sft",
        output_absent=True,
    ),
    # -- a completion longer than the generator's positions (the tiny model has 128) -------------------
    Case(
        "ppo-completion-beyond-positions",
        ["ppo", "{recipe}", "--set", "trainer.max_completion_length=1000000000"],
        2,
        ["trainer.max_completion_length", "1000000000", "128 positions"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "check-completion-beyond-positions",
        ["check", "{recipe}", "--set", "trainer.max_completion_length=1000000000"],
        2,
        ["trainer.max_completion_length", "128 positions", "max_position_embeddings"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "check-quickstart-completion-beyond-positions",
        [
            "check",
            QUICKSTART,
            "--set",
            "trainer.max_completion_length=1000000000",
            "--set",
            "trainer.output_dir={tmp}/out",
        ],
        2,
        ["trainer.max_completion_length", "model.init_config.max_position_embeddings", "128"],
        output_absent=True,
    ),
    Case(
        "gumbel-completion-beyond-positions",
        ["gumbel", "{recipe}", "--set", "gumbel.max_completion_length=200"],
        2,
        ["gumbel.max_completion_length", "128 positions"],
        recipe(),
        output_absent=True,
    ),
    # -- earlier cases: tests/cli/test_user_errors.py -------------------------------------------------
    Case(
        "check-recipe-not-text",
        ["check", "{recipe}"],
        2,
        ["recipe.yaml", "not a text file"],
        binary_recipe,
        output_absent=True,
    ),
    *[
        pytest.param(
            Case(
                f"{command}-{section}-use-vllm-without-vllm",
                [command, "{recipe}", "--set", f"{section}.use_vllm=true"],
                2,
                [f"{section}.use_vllm", "pip install vllm"],
                recipe(),
                output_absent=True,
            ),
            marks=no_vllm(),
        )
        for command, section in (("check", "trainer"), ("ppo", "trainer"), ("check", "ppo"), ("ppo", "ppo"))
    ],
    *[
        Case(
            f"check-{algorithm}-missing-discriminator-{field}",
            ["check", "{recipe}", "--algorithm", algorithm],
            2,
            [f"discriminator.{field}: no such file or directory"],
            recipe(discriminator=discriminator),
            output_absent=True,
        )
        for algorithm in ("ppo", "reinforce")
        for field, discriminator in (
            ("model", MISSING_CLASSIFIER),
            ("encoder", {"encoder": "./no-such-encoder"}),
        )
    ],
    Case(
        "ppo-warm-start-missing-discriminator",  # refused before the SFT warm start runs
        ["ppo", "{recipe}", "--samples", "0"],
        2,
        ["discriminator.model: no such file or directory"],
        recipe(
            model={"warm_start": "sft"},
            sft={"max_steps": 2, "save_strategy": "no", "per_device_train_batch_size": 8},
            discriminator=MISSING_CLASSIFIER,
        ),
        output_dir="out-sft",
        output_absent=True,
    ),
    Case(
        "check-warm-start-missing-discriminator",
        ["check", "{recipe}"],
        2,
        ["discriminator.model: no such file or directory"],
        recipe(model={"warm_start": "sft"}, discriminator=MISSING_CLASSIFIER),
        output_dir="out-sft",
        output_absent=True,
    ),
    Case(
        "check-all-responses-empty",
        ["check", "{recipe}"],
        2,
        ["d.jsonl", "'post'", "empty"],
        recipe(
            files={"d.jsonl": jsonl([{"topic": "a", "post": ""}, {"topic": "c", "post": "   "}])},
            data={"train": "d.jsonl"},
        ),
        output_absent=True,
    ),
    pytest.param(
        Case(
            "check-malformed-jsonl-line",
            ["check", "{recipe}"],
            2,
            ["data.train.path", "d.jsonl:4: not valid JSON"],
            recipe(
                files={
                    "d.jsonl": '{"topic": "a", "post": "b"}\n\n{"topic": "c", "post": "d"}\n{"topic": "e", post}\n'
                },
                data={"train": "d.jsonl"},
            ),
            output_absent=True,
        ),
    ),
    Case(
        "check-malformed-json-document",
        ["check", "{recipe}"],
        2,
        ["data.train.path", "d.json:3: not valid JSON"],
        recipe(
            files={"d.json": '[\n  {"topic": "a", "post": "b"},\n  {"topic": "c" "post": "d"}\n]\n'},
            data={"train": "d.json"},
        ),
        output_absent=True,
    ),
    Case(
        "check-empty-jsonl",
        ["check", "{recipe}"],
        2,
        ["data.train.path", "d.jsonl is empty"],
        recipe(files={"d.jsonl": "\n  \n"}, data={"train": "d.jsonl"}),
        output_absent=True,
    ),
    # -- earlier cases: tests/cli/test_recipe.py --------------------------------------------------------
    Case(
        "ppo-missing-column",
        ["ppo", "{recipe}"],
        2,
        ["data.prompt_column: column 'title' not found in data.train", "topic, post"],
        recipe(
            files={"d.csv": "topic,post\nweather,sunny today\n"},
            data={"train": "d.csv", "prompt_column": "title"},
        ),
        output_absent=True,
    ),
    Case(
        "reinforce-missing-data-file",
        ["reinforce", "{recipe}"],
        2,
        ["data.train.path: file not found", "missing.jsonl"],
        recipe(data={"train": "missing.jsonl"}),
        output_absent=True,
    ),
    Case(
        "ppo-empty-dataset",
        ["ppo", "{recipe}"],
        2,
        ["data.train: the dataset is empty"],
        recipe(files={"empty.csv": "topic,post\n"}, data={"train": "empty.csv"}),
        output_absent=True,
    ),
    Case(
        "ppo-unsupported-file-type",
        ["ppo", "{recipe}"],
        2,
        ["unsupported file type '.txt'", ".parquet"],
        recipe(files={"data.txt": "hello"}, data={"train": "data.txt"}),
        output_absent=True,
    ),
    Case(
        "ppo-set-bad-choice",
        ["ppo", "{recipe}", "--set", "discriminator.kind=critic"],
        2,
        ["discriminator.kind", "'critic' is not a valid choice", "'head'"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "ppo-missing-model",
        ["ppo", "{recipe}"],
        2,
        ["model.name_or_path", "no-such-model"],
        recipe(model_dir="no-such-model"),
        output_absent=True,
    ),
    Case(
        "check-missing-model",
        ["check", "{recipe}"],
        2,
        ["model.name_or_path", "no such file or directory"],
        recipe(model_dir="no-such-model"),
        output_absent=True,
    ),
    Case(
        "ppo-missing-discriminator-classifier",
        ["ppo", "{recipe}"],
        2,
        ["discriminator.model: no such file or directory"],
        recipe(discriminator=MISSING_CLASSIFIER),
        output_absent=True,
    ),
    Case(
        "check-sft-unknown-key",
        ["check", "{recipe}", "--algorithm", "sft", "--set", "sft.learning_rat=0.0001"],
        2,
        ["sft: unknown key 'learning_rat'", "learning_rate"],
        recipe(),
        output_dir="out-sft",
        output_absent=True,
    ),
    Case(
        "check-contrast-file-missing",
        ["check", "{recipe}"],
        2,
        ["evaluate.contrast.train.path: file not found", "left.parquet"],
        recipe(evaluate={"contrast": {"train": "left.parquet"}}),
        output_absent=True,
    ),
    Case(
        "check-unknown-key-suggests",
        ["check", "{recipe}", "--set", "discriminator.lerning_rate=0.001"],
        2,
        ["discriminator: unknown key 'lerning_rate'", "Did you mean 'learning_rate'"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "check-bool-is-not-an-int",
        ["check", "{recipe}", "--set", "discriminator.batch_size=true"],
        2,
        ["discriminator.batch_size", "expected an integer", "True"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "check-yaml-yes-is-not-a-bool",
        ["check", "{recipe}", "--set", "discriminator.lstm=yes"],
        2,
        ["discriminator.lstm: expected true or false, got 'yes'"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "check-trainer-wrong-type",
        ["check", "{recipe}", "--set", "trainer.max_steps=ten"],
        2,
        ["trainer.max_steps", "expected an integer"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "check-reward-form-bogus",
        ["check", "{recipe}", "--set", "discriminator.reward.form=bogus"],
        2,
        ["discriminator.reward.form", "'gail'"],
        recipe(),
        output_absent=True,
    ),
    Case(
        "check-set-without-value",
        ["check", "{recipe}", "--set", "trainer.max_steps"],
        2,
        ["--set 'trainer.max_steps'", "KEY=VALUE"],
        recipe(),
        output_absent=True,
    ),
    Case("check-recipe-not-found", ["check", "{tmp}/nope.yaml"], 2, ["recipe: file not found", "nope.yaml"]),
    Case("check-recipe-bad-yaml", ["check", "{recipe}"], 2, ["recipe", "not valid YAML"], bad_yaml),
]


def _id(case) -> str:
    return (case.values[0] if hasattr(case, "values") else case).id


@pytest.fixture()
def fixtures(tiny_model_dir) -> dict:
    """The session fixtures a row's ``setup`` may use."""
    return {"tiny_model_dir": tiny_model_dir}


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_hostile_recipe(case: Case, tmp_path: Path, fixtures: dict) -> None:
    run_case(case, tmp_path, fixtures)
