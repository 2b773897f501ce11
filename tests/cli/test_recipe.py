"""Recipe validation: every bad input is one clear error naming the field, before any model loads."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from gan_rl.cli.main import main
from gan_rl.cli.recipe import apply_overrides, load_recipe, parse_recipe
from gan_rl.cli.trl_config import build_spin_config, build_trainer_config
from gan_rl.errors import RecipeError
from tests.conftest import base_recipe, write_recipe


def minimal(**over) -> dict:
    raw = {
        "model": {"name_or_path": "some/model"},
        "data": {"train": "train.parquet"},
        "trainer": {"output_dir": "out", "bf16": False},
    }
    for k, v in over.items():
        raw.setdefault(k, {}).update(v)
    return raw


def error_of(raw: dict) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw)
    return str(info.value)


def test_minimal_recipe_gets_defaults(tmp_path):
    recipe = parse_recipe(minimal(), base_dir=tmp_path)
    assert recipe.discriminator.kind == "head"
    assert recipe.data.train.path == "train.parquet"
    assert recipe.resolve_path("train.parquet") == tmp_path / "train.parquet"
    assert recipe.model.trust_remote_code is False


def test_every_data_source_may_be_given_as_its_path():
    """``train: a.csv`` and the optional sources alike (``test``, ``validation``, the contrast's), which
    pydantic reaches through ``DataSource | None``."""
    raw = minimal(data={"test": "test.parquet", "validation": "val.csv"})
    raw["evaluate"] = {"contrast": {"train": "left.parquet", "test": "left-test.parquet"}}
    raw["model"]["warm_start"] = "sft"
    raw["model"]["warm_start_data"] = "mixed.jsonl"
    recipe = parse_recipe(raw)
    assert recipe.data.test.path == "test.parquet" and recipe.data.validation.path == "val.csv"
    assert recipe.evaluate.contrast.train.path == "left.parquet"
    assert recipe.evaluate.contrast.test.path == "left-test.parquet"
    assert recipe.model.warm_start_data.path == "mixed.jsonl"
    assert "data.test: expected a mapping, got 5." in error_of(minimal(data={"test": 5}))


def test_unknown_key_names_field_and_suggests():
    msg = error_of(minimal(discriminator={"lerning_rate": 1e-3}))
    assert "discriminator: unknown key 'lerning_rate'" in msg
    assert "Did you mean 'learning_rate'" in msg


def test_unknown_section():
    msg = error_of({**minimal(), "discriminater": {}})
    assert "recipe: unknown key 'discriminater'" in msg and "discriminator" in msg


def test_wrong_type_names_field():
    msg = error_of(minimal(discriminator={"batch_size": "many"}))
    assert "discriminator.batch_size" in msg and "integer" in msg


def test_bool_is_not_an_int_and_int_not_bool():
    assert "discriminator.batch_size" in error_of(minimal(discriminator={"batch_size": True}))
    assert "discriminator.lstm" in error_of(minimal(discriminator={"lstm": 1}))


def test_bad_choice_lists_valid_ones():
    msg = error_of(minimal(discriminator={"kind": "critic"}))
    assert "discriminator.kind" in msg and "'head'" in msg and "'classifier'" in msg


def test_nested_reward_section_is_checked():
    msg = error_of(minimal(discriminator={"reward": {"form": "exp"}}))
    assert "discriminator.reward.form" in msg and "'gail'" in msg
    msg = error_of(minimal(discriminator={"reward": {"clip": [1.0, -1.0]}}))
    assert "discriminator.reward.clip" in msg


def test_value_ranges_are_checked():
    assert "discriminator.label_smoothing" in error_of(minimal(discriminator={"label_smoothing": 0.7}))
    assert "discriminator.d_model" in error_of(minimal(discriminator={"d_model": 30, "num_heads": 4}))


def test_yaml_exponent_without_dot_is_a_number():
    recipe = parse_recipe(minimal(discriminator={"learning_rate": "3e-4"}))
    assert recipe.discriminator.learning_rate == pytest.approx(3e-4)


def test_classifier_needs_a_model():
    assert "discriminator.model" in error_of(minimal(discriminator={"kind": "classifier"}))


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("classifier", "d_model", 32),
        ("classifier", "num_layers", 1),
        ("classifier", "num_heads", 2),
        ("classifier", "dropout", 0.0),
        ("classifier", "lstm", True),
        ("classifier", "lstm_hidden", 64),
        ("classifier", "encoder", "org/encoder"),
        ("classifier", "encoder_layer", 0),
        ("classifier", "encode_batch_size", 8),
        ("head", "model", "org/classifier"),
        ("head", "lora", {"r": 4}),
        ("head", "lora", {}),  # LoRA with its defaults is still LoRA on a classifier
    ],
)
def test_a_field_only_the_other_kind_reads_is_rejected(kind, field, value):
    disc = {"kind": kind, field: value, **({"model": "org/classifier"} if kind == "classifier" else {})}
    msg = error_of(minimal(discriminator=disc))
    owner = "head" if kind == "classifier" else "classifier"
    reads = (
        f"only kind '{owner}' reads it"
        if field != "lora"
        else "only kinds 'classifier' and 'adapter' read it"
    )
    assert msg.startswith(f"discriminator.{field}: {reads}")
    assert f"kind '{kind}'" in msg and f"set kind: {owner}" in msg


def test_defaults_and_fields_of_both_kinds_pass_for_either_kind():
    shared = {
        "max_length": 64,
        "conditional": False,
        "mark_end": True,
        "cache_size": 8,
        "trust_remote_code": True,
    }
    parse_recipe(minimal(discriminator={"kind": "head", **shared}))
    parse_recipe(minimal(discriminator={"kind": "classifier", "model": "org/classifier", **shared}))
    # A head-only field written out with its default value changes nothing, so it passes.
    parse_recipe(minimal(discriminator={"kind": "classifier", "model": "x/y", "d_model": 256, "lstm": False}))


def test_model_needs_exactly_one_source():
    assert "exactly one" in error_of({**minimal(), "model": {}})
    msg = error_of({**minimal(), "model": {"name_or_path": "x", "init_config": {"model_type": "llama"}}})
    assert "exactly one" in msg


def test_quantization_needs_lora():
    assert "model.quantization" in error_of(minimal(model={"quantization": {"bits": 4}}))


def test_missing_sections():
    assert "missing required section 'data'" in error_of({"model": {"name_or_path": "x"}})


def test_data_source_needs_one_kind():
    raw = minimal()
    raw["data"]["train"] = {"path": "a.csv", "hub": "x/y"}
    assert "data.train" in error_of(raw)


def test_overrides_set_nested_values_as_yaml():
    raw = apply_overrides(
        minimal(),
        ["trainer.max_steps=10", "discriminator.kind=classifier", "discriminator.reward.clip=[-1, 1]"],
    )
    assert raw["trainer"]["max_steps"] == 10
    assert raw["discriminator"]["kind"] == "classifier"
    assert raw["discriminator"]["reward"]["clip"] == [-1, 1]


def test_override_of_a_string_data_source():
    raw = apply_overrides(minimal(), ["data.train.rows=5"])
    assert raw["data"]["train"] == {"path": "train.parquet", "rows": 5}


def test_bad_override_syntax():
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        apply_overrides(minimal(), ["trainer.max_steps"])


def test_trainer_section_is_trl_config():
    recipe = parse_recipe(minimal(trainer={"max_steps": 7, "beta": 0.1}, ppo={"num_iterations": 2}))
    ppo = build_trainer_config(recipe, "ppo")
    assert type(ppo).__name__ == "GRPOConfig" and ppo.max_steps == 7 and ppo.num_iterations == 2
    reinforce = build_trainer_config(recipe, "reinforce")
    assert (
        type(reinforce).__name__ == "RLOOConfig" and reinforce.beta == 0.1 and reinforce.num_iterations == 1
    )


def test_save_steps_inside_trls_generation_cycle_is_refused():
    """A checkpoint between two generations would resume with fresh samples: another run."""
    recipe = parse_recipe(
        minimal(trainer={"save_strategy": "steps", "save_steps": 3}, ppo={"num_iterations": 2})
    )
    with pytest.raises(RecipeError, match=r"trainer.save_steps: 3 .*num_iterations 2.*multiple of 2"):
        build_trainer_config(recipe, "ppo")
    # TRL's default (500) inside a 3-step cycle is named as the default.
    recipe = parse_recipe(minimal(ppo={"num_iterations": 3}))
    with pytest.raises(RecipeError, match=r"save_steps: 500 \(TRL default\).*multiple of 3"):
        build_trainer_config(recipe, "ppo")
    for ok in (
        minimal(trainer={"save_strategy": "steps", "save_steps": 4}, ppo={"num_iterations": 2}),
        minimal(trainer={"save_strategy": "no", "save_steps": 3}, ppo={"num_iterations": 2}),
        minimal(trainer={"save_strategy": "steps", "save_steps": 3}),
    ):
        build_trainer_config(parse_recipe(ok), "ppo")


def test_trainer_unknown_field_suggests():
    recipe = parse_recipe(minimal(trainer={"max_step": 7}))
    with pytest.raises(RecipeError, match="unknown key 'max_step'.*max_steps"):
        build_trainer_config(recipe, "ppo")


def test_trainer_field_of_the_other_algorithm_is_explained():
    recipe = parse_recipe(minimal(trainer={"scale_rewards": "batch"}))
    with pytest.raises(RecipeError, match="trainer.scale_rewards.*ppo"):
        build_trainer_config(recipe, "reinforce")


def test_trainer_wrong_type():
    recipe = parse_recipe(minimal(trainer={"max_steps": "ten"}))
    with pytest.raises(RecipeError, match="trainer.max_steps"):
        build_trainer_config(recipe, "ppo")


def test_trl_validation_applies():
    recipe = parse_recipe(minimal(trainer={"per_device_train_batch_size": 3, "num_generations": 4}))
    with pytest.raises(RecipeError, match="GRPOConfig rejected"):
        build_trainer_config(recipe, "ppo")


def test_load_recipe_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


# -- through the CLI: exit code 2, one line, no traceback, nothing loaded ------------------------------


def run_cli(*args):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def cli_recipe(tmp_path, **sections):
    # A model path that does not exist: if the error is about data, no model load was attempted first.
    raw = base_recipe(tmp_path / "no-such-model", tmp_path / "out", **sections)
    return write_recipe(tmp_path / "r.yaml", raw)


def test_cli_missing_column(tmp_path, data_files):
    path = cli_recipe(tmp_path, data={"train": str(data_files["csv"]), "prompt_column": "title"})
    code, out = run_cli("ppo", str(path))
    assert code == 2
    assert "data.prompt_column: column 'title' not found in data.train" in out and "topic, post" in out
    assert "Traceback" not in out
    assert not (tmp_path / "out").exists(), "nothing may be written for a recipe that fails validation"


def test_cli_missing_file(tmp_path):
    path = cli_recipe(tmp_path, data={"train": "missing.jsonl"})
    code, out = run_cli("reinforce", str(path))
    assert code == 2 and "data.train.path: file not found" in out and str(tmp_path / "missing.jsonl") in out


def test_cli_empty_dataset(tmp_path):
    (tmp_path / "empty.csv").write_text("topic,post\n")
    code, out = run_cli("ppo", str(cli_recipe(tmp_path, data={"train": "empty.csv"})))
    assert code == 2 and "data.train: the dataset is empty" in out


def test_cli_unsupported_file_type(tmp_path):
    (tmp_path / "data.txt").write_text("hello")
    code, out = run_cli("ppo", str(cli_recipe(tmp_path, data={"train": "data.txt"})))
    assert code == 2 and "unsupported file type '.txt'" in out and ".parquet" in out


def test_cli_set_override_is_validated(tmp_path):
    code, out = run_cli("ppo", str(cli_recipe(tmp_path)), "--set", "discriminator.kind=critic")
    assert code == 2 and "discriminator.kind" in out


def test_cli_missing_model_is_a_clear_error(tmp_path):
    code, out = run_cli("ppo", str(cli_recipe(tmp_path)))
    assert code == 2 and "model" in out and "no-such-model" in out
    assert "Traceback" not in out


def test_cli_check_command(tmp_path, recipe_factory):
    code, out = run_cli("check", str(recipe_factory()))
    assert code == 0 and "valid for ppo" in out and "train: 64 rows" in out


def test_relative_data_paths_resolve_against_the_recipe(tmp_path, data_files):
    sub = tmp_path / "recipes"
    sub.mkdir()
    raw = base_recipe(tmp_path / "m", tmp_path / "out", data={"train": "../data.jsonl", "test": None})
    path = write_recipe(sub / "r.yaml", raw)
    # check resolves the generator checkpoint as run does: a local path that does not exist is an error.
    code, out = run_cli("check", str(path))
    assert code == 2 and "model.name_or_path" in out and "no such file or directory" in out
    (tmp_path / "m").mkdir()
    code, out = run_cli("check", str(path))
    assert code == 0, out


def test_shipped_recipes_parse():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml")):
        recipe = load_recipe(path)
        for algorithm in ("ppo", "reinforce"):
            raw = yaml.safe_load(path.read_text())
            assert raw["trainer"]["output_dir"]
            build_trainer_config(recipe, algorithm, bf16=False)
        if recipe.spin:  # recipes/smollm2-twon.yaml's spin: section
            build_spin_config(recipe, bf16=False)


@pytest.mark.parametrize(
    ("section", "fields", "expected"),
    [
        ("discriminator", {"num_heads": 0}, "discriminator.num_heads: expected positive"),
        ("discriminator", {"updates_per_round": 0}, "discriminator.updates_per_round: expected 1 or more"),
        ("data", {"prompt_template": "{topic}\n"}, "data.prompt_template: '{topic}\\n' is not a valid"),
        ("data", {"prompt_template": "Write a post.\n"}, "does not contain '{prompt}'"),
        ("data", {"max_train_samples": 0}, "data.max_train_samples: expected a positive number"),
        ("model", {"word_tokenizer_from_data": True}, "model.word_tokenizer_from_data: only for a model"),
        (
            "model",
            {"warm_start": "rlhf"},
            "model.warm_start: 'rlhf' is not a valid choice; valid: 'none', 'sft'",
        ),
        ("discriminator", {"max_accuracy": 0.5}, "discriminator.max_accuracy: expected in (0.5, 1]"),
        ("discriminator", {"real_pool_size": -1}, "discriminator.real_pool_size: expected 0 or more"),
        ("sft_loss", {"batch_size": 0}, "sft_loss.batch_size: expected a positive number"),
        ("evaluate", {"folds": 1}, "evaluate.folds: expected at least 2"),
        ("evaluate", {"encoderr": "x"}, "evaluate: unknown key 'encoderr'. Did you mean 'encoder'?"),
        (
            "evaluate",
            {"contrast": {"train": {"path": "a.csv", "hub": "b"}}},
            "evaluate.contrast.train: give exactly one",
        ),
    ],
)
def test_section_checks_name_the_field(section, fields, expected):
    assert expected in error_of(minimal(**{section: fields}))


def test_checkpoint_names_resolve_as_paths_or_hub_ids(tmp_path):
    from gan_rl.cli.models import resolve_checkpoint

    (tmp_path / "models" / "mine").mkdir(parents=True)
    resolve = parse_recipe(minimal(), base_dir=tmp_path).resolve_path
    assert resolve_checkpoint("Qwen/Qwen2.5-0.5B-Instruct", resolve) == "Qwen/Qwen2.5-0.5B-Instruct"
    assert resolve_checkpoint("gpt2", resolve) == "gpt2"
    assert resolve_checkpoint("models/mine", resolve) == str(tmp_path / "models" / "mine")
    with pytest.raises(RecipeError, match="discriminator.encoder: no such file or directory"):
        resolve_checkpoint("./models/missing", resolve, "discriminator.encoder")
    with pytest.raises(RecipeError, match="neither a local path .* nor a hub id"):
        resolve_checkpoint("not a/valid/id", resolve)


def test_cli_missing_discriminator_checkpoint_stops_before_loading(tmp_path, recipe_factory):
    path = recipe_factory(discriminator={"kind": "classifier", "model": "./no-such-classifier"})
    code, out = run_cli("ppo", str(path))
    assert code == 2 and "discriminator.model: no such file or directory" in out
    assert not (tmp_path / "out" / "recipe.yaml").exists()  # nothing was started


def test_yaml_no_is_a_string_and_true_false_are_booleans(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(minimal()).replace("bf16: false", "bf16: false\n  save_strategy: no"))
    recipe = load_recipe(path, ["trainer.eval_strategy=no", "discriminator.lstm=true"])
    assert recipe.trainer["save_strategy"] == "no" and recipe.trainer["eval_strategy"] == "no"
    assert recipe.discriminator.lstm is True
    with pytest.raises(RecipeError, match="discriminator.lstm: expected true or false, got 'yes'"):
        load_recipe(path, ["discriminator.lstm=yes"])


def test_cli_check_validates_sft_and_contrast_sections(tmp_path, recipe_factory):
    code, out = run_cli("check", str(recipe_factory(sft={"learning_rat": 1e-4})), "--algorithm", "sft")
    assert code == 2 and "sft: unknown key 'learning_rat'" in out and "learning_rate" in out
    missing = recipe_factory(name="c.yaml", evaluate={"contrast": {"train": "left.parquet"}})
    code, out = run_cli("check", str(missing))
    assert code == 2 and "evaluate.contrast.train.path: file not found" in out
    code, out = run_cli("check", str(recipe_factory(name="ok.yaml")), "--algorithm", "sft")
    assert code == 0 and "valid for sft" in out


# -- issue 26: values TRL or torch would refuse later, refused when the config is built ---------------


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"trainer": {"learning_rate": -1}}, "trainer.learning_rate: expected 0 or a positive finite number"),
        (
            {"ppo": {"learning_rate": float("nan")}},
            "ppo.learning_rate: expected 0 or a positive finite number",
        ),
        ({"trainer": {"max_steps": 0}}, "trainer.max_steps: expected a positive number of steps, or -1"),
        (
            {"trainer": {"max_steps": -1, "num_train_epochs": 0}},
            "trainer.num_train_epochs: expected a positive number of epochs when max_steps is -1, got 0.0.",
        ),
        (
            {"trainer": {"per_device_train_batch_size": 0}},
            "trainer.per_device_train_batch_size: expected at least 1",
        ),
        (
            {"trainer": {"gradient_accumulation_steps": 0}},
            "trainer.gradient_accumulation_steps: expected at least 1",
        ),
        ({"trainer": {"num_generations": 0}}, "trainer.num_generations: expected at least 2, got 0."),
        ({"ppo": {"num_iterations": 0}}, "ppo.num_iterations: expected at least 1, got 0."),
        ({"trainer": {"seed": -1}}, "trainer.seed: expected in [0, 2**32 - 1]"),
        ({"trainer": {"temperature": 0}}, "trainer.temperature: expected a positive finite number, got 0.0."),
        (
            {"trainer": {"max_completion_length": 0}},
            "trainer.max_completion_length: expected at least 1 token",
        ),
        (
            {"trainer": {"save_strategy": "steps", "save_steps": 0}},
            "trainer.save_steps: expected positive when save_strategy is 'steps', got 0.0.",
        ),
    ],
)
def test_values_refused_later_by_torch_or_trl_are_refused_when_the_config_is_built(sections, expected):
    recipe = parse_recipe(minimal(**sections))
    with pytest.raises(RecipeError) as info:
        build_trainer_config(recipe, "ppo")
    assert str(info.value).startswith(expected), str(info.value)


def test_epochs_with_max_steps_minus_one_and_a_zero_learning_rate_stay_valid():
    config = build_trainer_config(
        parse_recipe(minimal(trainer={"max_steps": -1, "num_train_epochs": 2, "learning_rate": 0})), "ppo"
    )
    assert config.max_steps == -1 and config.num_train_epochs == 2


def test_sft_values_are_checked_naming_their_section():
    from gan_rl.cli.trl_config import build_sft_config

    with pytest.raises(RecipeError, match=r"^sft\.learning_rate: expected 0 or a positive finite number"):
        build_sft_config(parse_recipe(minimal(sft={"learning_rate": -1})))
    with pytest.raises(RecipeError, match=r"^sft\.max_length: expected at least 1 token"):
        build_sft_config(parse_recipe(minimal(sft={"max_length": 0})))
    with pytest.raises(RecipeError, match=r"^trainer\.seed: expected in \[0, 2\*\*32 - 1\]"):  # shared
        build_sft_config(parse_recipe(minimal(trainer={"seed": -1})))


def test_gumbel_config_errors_name_the_section_and_field():
    with pytest.raises(RecipeError, match=r"^gumbel\.loss: 'hinge' is not a valid choice"):
        build_trainer_config(parse_recipe(minimal(gumbel={"loss": "hinge"})), "gumbel")
    with pytest.raises(RecipeError, match=r"^trainer\.learning_rate: expected 0 or a positive"):
        build_trainer_config(parse_recipe(minimal(trainer={"learning_rate": -1})), "gumbel")


# -- issue 26: a training set too small for one batch -------------------------------------------------


def test_fewer_rows_than_one_generation_batch_are_refused():
    from gan_rl.cli.trl_config import check_train_rows

    batch = {"per_device_train_batch_size": 8, "num_generations": 4}
    config = build_trainer_config(parse_recipe(minimal(trainer=batch)), "reinforce")
    check_train_rows("reinforce", config, 2)  # 8 completions = 2 prompts x 4 generations
    with pytest.raises(RecipeError) as info:
        check_train_rows("rloo", config, 1)
    assert str(info.value) == (
        "data.train: 1 row, fewer than the 2 prompts of one generation batch (trainer."
        "per_device_train_batch_size 8 / num_generations 4); TRL drops an incomplete batch, so no policy "
        "step would run: give data.train at least 2 rows, or lower trainer.per_device_train_batch_size."
    )
    spread = build_trainer_config(
        parse_recipe(minimal(trainer={**batch, "steps_per_generation": 3, "save_strategy": "no"})), "ppo"
    )
    with pytest.raises(RecipeError, match=r"fewer than the 6 prompts .*8 x 3 steps_per_generation / num"):
        check_train_rows("ppo", spread, 5)


def test_sft_and_gumbel_train_on_a_smaller_last_batch_unless_it_is_dropped():
    from gan_rl.cli.trl_config import build_sft_config, check_train_rows

    gumbel = build_trainer_config(
        parse_recipe(minimal(trainer={"per_device_train_batch_size": 8, "num_generations": 4})), "gumbel"
    )
    check_train_rows("gumbel", gumbel, 1)
    sft = build_sft_config(parse_recipe(minimal(sft={"per_device_train_batch_size": 4})))
    check_train_rows("sft", sft, 1)
    dropped = build_sft_config(
        parse_recipe(minimal(sft={"per_device_train_batch_size": 4, "dataloader_drop_last": True}))
    )
    with pytest.raises(
        RecipeError, match=r"^data\.train: 3 rows, fewer than one batch of 4 prompts.*sft\.data"
    ):
        check_train_rows("sft", dropped, 3)


def test_a_row_cap_in_the_recipe_is_checked_before_the_data_is_read():
    batch = {"per_device_train_batch_size": 8, "num_generations": 4}
    with pytest.raises(
        RecipeError, match=r"^data\.train: at most 1 row \(data\.max_train_samples: 1\), fewer"
    ):
        build_trainer_config(parse_recipe(minimal(trainer=batch, data={"max_train_samples": 1})), "ppo")
    raw = minimal(trainer=batch)
    raw["data"]["train"] = {"synthetic": "quickstart", "rows": 1}
    with pytest.raises(RecipeError, match=r"^data\.train: at most 1 row \(data\.train\.rows: 1\)"):
        build_trainer_config(parse_recipe(raw), "ppo")


# -- issue 26: a completion beyond the generator's positions ------------------------------------------


def test_completion_beyond_the_positions_of_an_init_config_or_local_config_is_refused(tmp_path):
    init = {
        "init_config": {"model_type": "llama", "max_position_embeddings": 16},
        "word_tokenizer_from_data": True,
    }
    recipe = parse_recipe({**minimal(trainer={"max_completion_length": 16}), "model": init})
    with pytest.raises(RecipeError) as info:
        build_trainer_config(recipe, "ppo")
    assert str(info.value) == (
        "trainer.max_completion_length: 16 tokens do not fit in the generator's 16 positions "
        "(model.init_config.max_position_embeddings), which the prompt shares; set it below 16."
    )
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_positions": 64}')
    local = minimal(model={"name_or_path": str(tmp_path)}, gumbel={"max_completion_length": 100})
    with pytest.raises(
        RecipeError, match=r"^gumbel\.max_completion_length: 100 tokens .* 64 positions \(n_positions"
    ):
        build_trainer_config(parse_recipe(local), "gumbel")
    with pytest.raises(RecipeError, match=r"^trainer\.max_completion_length: \d+ tokens \(the default\)"):
        build_trainer_config(parse_recipe(local), "ppo")
    local["trainer"]["max_completion_length"] = 48
    assert build_trainer_config(parse_recipe(local), "ppo").max_completion_length == 48


def test_completion_beyond_a_loaded_generators_positions_is_refused(generator):
    from datasets import Dataset

    from gan_rl.cli.models import check_position_limit

    model, tok = generator  # rotary, max_position_embeddings 128
    prompts = Dataset.from_list([{"prompt": "weather\n"}, {"prompt": "a post about cats\n"}])
    check_position_limit(model, tok, prompts, 100)
    with pytest.raises(
        RecipeError, match=r"^trainer\.max_completion_length: 1000000000 tokens do not fit in the 128 "
    ):
        check_position_limit(model, tok, prompts, 1_000_000_000)
    with pytest.raises(
        RecipeError, match=r"^data: the longest prompt is \d+ tokens, plus trainer\.max_completion_l"
    ):
        check_position_limit(model, tok, prompts, 127)


def test_a_yaml_error_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  a: 1\n b: 2\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(bad)
    assert "\n" not in str(info.value) and "at line 3, column 2" in str(info.value)
    with pytest.raises(RecipeError, match=r"value is not valid YAML \(.*line 1") as info:
        apply_overrides(minimal(), ["trainer.max_steps=[1"])
    assert "\n" not in str(info.value)
