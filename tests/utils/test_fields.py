"""The Python configs check types and choices at construction as the recipe does (issue 26): one check
driven by the type hints (gan_rl.utils.fields), a ConfigError naming the class and the field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from gan_rl.errors import ConfigError
from gan_rl.utils.fields import CheckedConfig, FieldError, check_value


@pytest.mark.parametrize(
    ("value", "tp", "expected"),
    [
        (3, int, 3),
        (3, float, 3.0),
        ("x", str | None, "x"),
        (None, int | None, None),
        ((1, 2), list[float], [1.0, 2.0]),
        ("all-linear", list[str] | str, "all-linear"),
        (["q", "v"], list[str] | str, ["q", "v"]),
        ("prob", Literal["logit", "prob"], "prob"),
        ({"a": 1}, dict, {"a": 1}),
    ],
)
def test_values_that_fit_pass_converted(value, tp, expected):
    checked = check_value(value, tp, "f")
    assert checked == expected and type(checked) is type(expected)


@pytest.mark.parametrize(
    ("value", "tp", "message"),
    [
        (True, int, "f: expected an integer, got True."),
        (1, bool, "f: expected true or false, got 1."),
        ("32", int, "f: expected an integer, got '32'."),
        ("1e-4", float, "f: expected a number, got '1e-4'."),  # only the recipe reads strings as numbers
        (True, Literal[1, 2], "f: True is not a valid choice; valid: 1, 2."),
        ("exp", Literal["logit", "prob"], "f: 'exp' is not a valid choice; valid: 'logit', 'prob'."),
        (3, str | None, "f: expected a string or null, got 3."),
        ([1.0, "a"], list[float] | None, "f[1]: expected a number, got 'a'."),  # inside: says where
        ("a", list[float], "f: expected a list, got 'a'."),
    ],
)
def test_values_that_do_not_fit_name_the_field(value, tp, message):
    with pytest.raises(FieldError) as info:
        check_value(value, tp, "f")
    assert str(info.value) == message


def test_yaml_numbers_written_as_strings_are_read_by_the_recipe_only():
    assert check_value("1e-4", float, "f", from_file=True) == pytest.approx(1e-4)


def test_pydantic_validates_a_section_read_from_a_file_naming_each_place():
    """The recipe's path: pydantic builds the config (YAML's ``1e-4`` string a number, an empty section its
    defaults), and an error inside a union or a nested config names its own place."""
    from pydantic import TypeAdapter

    from gan_rl import DiscriminatorConfig, DiscriminatorRewardConfig
    from gan_rl.utils.fields import FROM_FILE

    raw = {"learning_rate": "1e-4", "reward": None}
    config = TypeAdapter(DiscriminatorConfig).validate_python(raw, context=FROM_FILE)
    assert config.learning_rate == pytest.approx(1e-4) and config.reward == DiscriminatorRewardConfig()
    for value, message in [
        ({"reward": {"clip": [0, "a"]}}, r"^d\.reward\.clip\[1\]: expected a number, got 'a'\.$"),
        ({"reward": {"clip": [1, 0]}}, r"^d\.reward\.clip: expected \[low, high\] with low < high"),
        (
            {"reward": {"forms": 1}},
            r"^d\.reward: unknown key 'forms'\. Did you mean 'form'\? Valid keys: clip,",
        ),
        ({"lstm": "true"}, r"^d\.lstm: expected true or false, got 'true'\.$"),
    ]:
        with pytest.raises(FieldError, match=message):
            check_value(value, DiscriminatorConfig, "d", from_file=True)
    with pytest.raises(FieldError, match=r"^f\[1\]: expected a string, got 3\.$"):
        check_value(["q", 3], list[str] | str, "f")


def test_reward_config_refuses_a_bad_form_at_construction():
    from gan_rl import DiscriminatorRewardConfig

    with pytest.raises(
        ConfigError, match=r"^DiscriminatorRewardConfig\.form: 'bogus' is not a valid choice; valid: 'logit'"
    ):
        DiscriminatorRewardConfig(form="bogus")
    with pytest.raises(
        ConfigError, match=r"^DiscriminatorRewardConfig\.clip\[1\]: expected a number, got 'a'"
    ):
        DiscriminatorRewardConfig(clip=[-1.0, "a"])
    assert DiscriminatorRewardConfig(clip=(-1, 1)).clip == [-1.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": "32"}, r"^DiscriminatorConfig\.batch_size: expected an integer, got '32'\.$"),
        ({"batch_size": True}, r"^DiscriminatorConfig\.batch_size: expected an integer, got True\.$"),
        ({"lstm": 1}, r"^DiscriminatorConfig\.lstm: expected true or false, got 1\.$"),
        ({"kind": "critic"}, r"^DiscriminatorConfig\.kind: 'critic' is not a valid choice; valid: 'head'"),
        ({"weight_decay": -0.1}, r"^DiscriminatorConfig\.weight_decay: expected 0 or more, got -0\.1\.$"),
        ({"reward": {"form": "exp"}}, r"^DiscriminatorRewardConfig\.form: 'exp' is not a valid choice"),
        (
            {"reward": {"forms": "prob"}},
            r"^DiscriminatorConfig\.reward: DiscriminatorRewardConfig has no field 'forms'",
        ),
        (
            {"reward": 5},
            r"^DiscriminatorConfig\.reward: expected a DiscriminatorRewardConfig or a mapping of its fields",
        ),
        (
            {"kind": "classifier", "model": "m", "lora": {"r": 0}},
            r"^ClassifierLoraSettings\.r: expected a rank of at least 1, got 0\.$",
        ),
    ],
)
def test_discriminator_config_checks_types_and_choices_at_construction(kwargs, message):
    from gan_rl import DiscriminatorConfig

    with pytest.raises(ConfigError, match=message):
        DiscriminatorConfig(**kwargs)


def test_a_discriminator_config_changed_after_construction_is_checked_again():
    from gan_rl import DiscriminatorConfig

    config = DiscriminatorConfig(learning_rate=1)
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    config.batch_size = "32"
    with pytest.raises(ValueError, match="batch_size: expected an integer"):
        config.validate()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"learning_rate": -1}, r"^GumbelConfig\.learning_rate: expected 0 or a positive finite number"),
        ({"max_steps": 0}, r"^GumbelConfig\.max_steps: expected a positive number of steps, or -1"),
        ({"tau_start": "1"}, r"^GumbelConfig\.tau_start: expected a number, got '1'\.$"),
        ({"straight_through": 1}, r"^GumbelConfig\.straight_through: expected true or false"),
        ({"loss": "hinge"}, r"^GumbelConfig\.loss: 'hinge' is not a valid choice"),
        ({"num_generations": 0}, r"^GumbelConfig\.num_generations: expected at least 1, got 0\.$"),
        ({"seed": -1}, r"^GumbelConfig\.seed: expected in \[0, 2\*\*32 - 1\]"),
    ],
)
def test_gumbel_config_checks_at_construction(kwargs, message, tmp_path):
    from gan_rl.gumbel import GumbelConfig

    with pytest.raises(ConfigError, match=message):
        GumbelConfig(output_dir=str(tmp_path), **kwargs)


def test_recipe_sections_built_in_python_are_checked_too():
    from gan_rl.cli.recipe import DataSettings, EvaluateSettings, ModelSettings
    from gan_rl.utils.lora import LoraSettings

    with pytest.raises(
        ConfigError, match=r"^ModelSettings\.name_or_path: expected a string or null, got 3\.$"
    ):
        ModelSettings(name_or_path=3)
    with pytest.raises(ConfigError, match=r"^EvaluateSettings\.temperatures\[1\]: expected a number"):
        EvaluateSettings(temperatures=[1.0, "a"])
    with pytest.raises(ConfigError, match=r"^DataSettings\.max_train_samples: expected a positive number"):
        DataSettings(max_train_samples=0)
    with pytest.raises(ConfigError, match=r"^LoraSettings\.dropout: expected in \[0, 1\)"):
        LoraSettings(dropout=1.0)
    assert DataSettings(train={"path": "a.csv"}).train.path == "a.csv"


def test_a_checked_dataclass_of_ones_own():
    @dataclass(frozen=True)
    class Mine(CheckedConfig):
        n: int = 1
        mode: Literal["a", "b"] = "a"

    assert Mine(n=2).n == 2
    with pytest.raises(ConfigError, match=r"^Mine\.mode: 'c' is not a valid choice; valid: 'a', 'b'\.$"):
        Mine(mode="c")
