"""The shipped demo, ``gan-rl ppo recipes/quickstart.yaml``, does what the README says it does.

One command: an SFT warm start on mixed posts (``model.warm_start_data``: positive and negative adjectives,
half and half), then the adversarial run on positive posts only. The discriminator is never told what a
positive post is; the run's summary reports the share of positive samples before and after training,
beside the real posts' (the synthetic data declares the property, :mod:`gan_rl.cli.synthetic`).
``tests/cli/test_controlled.py`` tests the same task in its own recipes, ``ppo``, ``reinforce`` and
``gumbel``; this test holds the recipe a user runs first to it.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import yaml
from click.testing import CliRunner

from gan_rl.cli.main import main
from gan_rl.cli.recipe import DataSource, load_recipe
from gan_rl.cli.sft import warm_start, warm_start_recipe
from gan_rl.cli.synthetic import POSITIVE_POST, TOPICS
from gan_rl.cli.train import describe_property
from gan_rl.errors import RecipeError
from tests.conftest import ROOT

QUICKSTART = ROOT / "recipes" / "quickstart.yaml"

# The floors. Measured on the shipped recipe with --set trainer.seed=0, 1, 2 (the warm start's data order
# and the policy's sampling) on a 2-core AMD EPYC without AVX512-BF16 (float32), one torch thread, beside
# other jobs (2026-12-06): the warm start wrote 0.55, 0.53 and 0.50 positive posts of 128, the trained
# policy 0.97, 0.98 and 0.95 (a rise of 0.42-0.45). The same task in tests/cli/test_controlled.py's own
# recipes reached 0.94-0.98 from 0.47-0.55 over 8 draws (seeds 0-3, AVX512 and AVX2 kernels;
# benchmarks/results/controlled-seeds/). Each floor sits well below the worst of those runs: a new CPU is
# one more draw.
CHANCE = (0.3, 0.7)  # the warm start's share of positive posts: it learned both polarities
MIN_AFTER = 0.75  # the trained policy's share
MIN_RISE = 0.25  # after - before
SUMMARY_LINE = re.compile(
    r"positive samples \(a property of the data that training never sees\): "
    r"before (\d\.\d\d) -> after (\d\.\d\d), real responses 1\.00 \(128 held-out prompts\)"
)


@pytest.mark.slow
def test_quickstart_moves_the_generator_to_the_unnamed_property(tmp_path):
    out = tmp_path / "quickstart"
    result = CliRunner().invoke(
        main, ["ppo", str(QUICKSTART), "--output-dir", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output

    # One command ran both stages: the warm start beside the run, the run from the warm start's result.
    assert json.loads((tmp_path / "quickstart-sft" / "run_summary.json").read_text())["steps"] == 200
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["steps"] == 300

    measured = summary["data_property"]
    assert measured["name"] == "positive" and measured["prompts"] == 128 and measured["real"] == 1.0
    assert CHANCE[0] <= measured["before"] <= CHANCE[1]
    assert measured["after"] >= MIN_AFTER
    assert measured["after"] - measured["before"] >= MIN_RISE

    # The printed summary says it, with the numbers of run_summary.json, beside the discriminator's verdict
    # and before/after samples that read as posts.
    line = SUMMARY_LINE.search(result.output)
    assert line is not None, result.output[-3000:]
    assert (float(line[1]), float(line[2])) == (round(measured["before"], 2), round(measured["after"], 2))
    assert "final disc/accuracy" in result.output and "mean reward" in result.output
    assert "final discriminator P(real), before -> after" in result.output
    for sample in summary["samples"][:3]:
        assert re.search(rf"^  before +{re.escape(sample['before'])}$", result.output, re.M)
        assert re.search(rf"^  after +{re.escape(sample['after'])}$", result.output, re.M)
    posts = [s["after"] for s in summary["samples"]]
    assert sum(bool(set(TOPICS) & set(p.split())) for p in posts) >= len(posts) // 2  # posts about a topic


# -- the mechanisms the demo rests on, without training --------------------------------------------------


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "model.warm_start=none",
            "model.warm_start_data: the data of the SFT warm start; set 'warm_start: sft'",
        ),
        ("model.warm_start_data.synthetic=polarity-mixd", "model.warm_start_data.synthetic: expected one of"),
        ("model.warm_start_data.rowz=3", "model.warm_start_data: unknown key 'rowz'. Did you mean 'rows'?"),
        ("model.warm_start_data=5", "model.warm_start_data: expected a mapping, got 5."),
    ],
)
def test_bad_warm_start_data_is_one_line_and_exit_2(override, expected, tmp_path):
    code, output = run_cli(
        "check", str(QUICKSTART), "--set", override, "--set", f"trainer.output_dir={tmp_path}"
    )
    assert code == 2 and output.count("\n") == 1 and expected in output, output


def test_a_missing_warm_start_file_is_named_before_sft_starts(tmp_path):
    code, output = run_cli(
        "ppo", str(QUICKSTART), "--set", f"model.warm_start_data={tmp_path / 'nope.jsonl'}",
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2 and "error: model.warm_start_data.path: file not found" in output, output
    assert not (tmp_path / "out-sft").exists()  # nothing trained, nothing written


def test_check_reads_the_warm_start_data_as_the_run_does(tmp_path):
    """``gan-rl check`` names the same missing file the run would, and counts nothing as valid."""
    code, output = run_cli(
        "check", str(QUICKSTART), "--set", f"model.warm_start_data={tmp_path / 'nope.jsonl'}"
    )
    assert code == 2 and "error: model.warm_start_data.path: file not found" in output, output
    rows = tmp_path / "mixed.jsonl"
    rows.write_text('{"topic": "t", "comment": "c"}\n')
    code, output = run_cli("check", str(QUICKSTART), "--set", f"model.warm_start_data={rows}")
    assert code == 2 and "model.warm_start_data" in output and "post" in output, output


def test_the_warm_start_trains_on_its_own_data_and_reuses_only_a_run_on_it(tmp_path):
    recipe = load_recipe(QUICKSTART, [f"trainer.output_dir={tmp_path / 'out'}"])
    sft = warm_start_recipe(recipe)
    assert sft.data.train == DataSource(synthetic="polarity-mixed", rows=1024, seed=0)
    assert sft.data.test == recipe.data.test and sft.model == recipe.model  # only the train source changes

    finished = tmp_path / "out-sft"  # a finished SFT run, as warm_start would find it
    finished.mkdir()
    (finished / "run_summary.json").write_text("{}")
    baseline = dataclasses.replace(sft, data=recipe.data)  # gan-rl sft's own run: on data.train
    (finished / "recipe.yaml").write_text(yaml.safe_dump({"algorithm": "sft", **baseline.to_dict()}))
    with pytest.raises(RecipeError, match="other data settings"):
        warm_start(recipe)
    (finished / "recipe.yaml").write_text(yaml.safe_dump({"algorithm": "sft", **sft.to_dict()}))
    started = warm_start(recipe)
    assert started.model.name_or_path == str(finished.resolve()) and started.model.warm_start_data is None
    assert started.data == recipe.data  # the adversarial run keeps its own data


def test_the_property_share_and_its_line():
    assert POSITIVE_POST.holds("rain is wonderful .") and POSITIVE_POST.holds("wow , lovely cats !")
    assert not POSITIVE_POST.holds("rain is awful .") and not POSITIVE_POST.holds("great and awful")
    assert not POSITIVE_POST.holds("rain is rain .")
    line = describe_property(
        {
            "name": "positive",
            "description": "",
            "prompts": 128,
            "before": 0.4844,
            "after": 0.9531,
            "real": 1.0,
        }
    )
    assert SUMMARY_LINE.fullmatch(line) and SUMMARY_LINE.fullmatch(line).groups() == ("0.48", "0.95")
