"""User mistakes become one line naming the field (exit code 2) before anything heavy runs, and nothing
stale from an earlier run is taken for the current one (issue 9, items 4, 5, 7 and 8)."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from gan_rl.cli.data import load_raw_splits
from gan_rl.cli.main import main
from gan_rl.cli.recipe import load_recipe, parse_recipe
from gan_rl.errors import RecipeError
from tests.conftest import TINY_LLAMA


def error_line(*args: str) -> str:
    """Run the CLI, expect exit code 2 and a one-line error; return that line."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


def data_recipe(train: str, tmp_path: Path):
    return parse_recipe(
        {
            "model": {"name_or_path": "x"},
            "data": {"train": train, "prompt_column": "topic", "response_column": "post"},
        },
        base_dir=tmp_path,
    )


# --------------------------------------------------------------------------------------------------
# Item 4: a stale OUTPUT_DIR/initial-model is rebuilt for another init_config
# --------------------------------------------------------------------------------------------------


def test_initial_model_is_rebuilt_for_another_init_config(tmp_path):
    from transformers import AutoConfig

    from gan_rl.cli.models import prepare_tokenizer
    from gan_rl.cli.outputs import INITIAL_MODEL_DIR

    texts = ["a post about the weather", "a post about cats", "sun rain snow"]
    gpt2 = {"model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 64}

    def build(init_config: dict) -> Path:
        recipe = parse_recipe(
            {
                "model": {"init_config": init_config, "word_tokenizer_from_data": True},
                "data": {"train": {"synthetic": "quickstart"}},
            },
            base_dir=tmp_path,
        )
        prepare_tokenizer(recipe.model, recipe.resolve_path, tmp_path / "out", texts)
        return tmp_path / "out" / INITIAL_MODEL_DIR

    folder = build(dict(TINY_LLAMA))  # a run that failed later leaves this behind
    assert AutoConfig.from_pretrained(folder).model_type == "llama"
    folder = build(gpt2)  # the next run in the same directory, with another architecture
    assert AutoConfig.from_pretrained(folder).model_type == "gpt2"
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    build(dict(gpt2))  # the same source: reused, not built again
    assert weights.stat().st_mtime_ns == stamp
    build({**gpt2, "n_embd": 32})  # a changed field of the same architecture: rebuilt
    assert AutoConfig.from_pretrained(folder).n_embd == 32


# --------------------------------------------------------------------------------------------------
# Item 5: one line instead of a traceback
# --------------------------------------------------------------------------------------------------


def test_recipe_that_is_not_text_is_one_line(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"model:\n  name_or_path: x\n\xff\xfe\x00\x01 binary")
    line = error_line("check", str(path))
    assert str(path) in line and "not a text file" in line
    with pytest.raises(RecipeError, match="not a text file"):
        load_recipe(path)


@pytest.fixture()
def without_vllm(monkeypatch):
    """vllm is not installed (whether or not it is on this machine)."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else find_spec(name, *a)
    )


@pytest.mark.parametrize("section", ["trainer", "ppo"])
def test_use_vllm_without_vllm_is_refused_by_check_and_run(section, tmp_path, recipe_factory, without_vllm):
    path = recipe_factory()
    line = error_line("check", str(path), "--set", f"{section}.use_vllm=true")
    assert f"{section}.use_vllm" in line and "pip install vllm" in line
    line = error_line("ppo", str(path), "--set", f"{section}.use_vllm=true")
    assert f"{section}.use_vllm" in line and "pip install vllm" in line
    assert not (tmp_path / "out").exists(), "nothing may be written for a recipe that fails validation"


# --------------------------------------------------------------------------------------------------
# Item 7: check rejects what run rejects; a warm start checks the discriminator before SFT
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("discriminator", "field"),
    [
        ({"kind": "classifier", "model": "./no-such-classifier"}, "discriminator.model"),
        ({"encoder": "./no-such-encoder"}, "discriminator.encoder"),
    ],
)
def test_check_rejects_a_missing_discriminator_checkpoint(discriminator, field, recipe_factory):
    for algorithm in ("ppo", "reinforce"):
        line = error_line("check", str(recipe_factory(discriminator=discriminator)), "--algorithm", algorithm)
        assert f"{field}: no such file or directory" in line


def test_check_accepts_existing_discriminator_checkpoints(
    tiny_classifier_dir, tiny_model_dir, recipe_factory
):
    from gan_rl.cli.models import preflight_checkpoints

    path = recipe_factory(discriminator={"kind": "classifier", "model": str(tiny_classifier_dir)})
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 0, result.output
    found = preflight_checkpoints(load_recipe(path), "unused")
    assert found.classifier == str(tiny_classifier_dir) and found.generator == str(tiny_model_dir)
    head = load_recipe(recipe_factory(name="head.yaml", discriminator={"encoder": str(tiny_model_dir)}))
    assert preflight_checkpoints(head, "unused").encoder == str(tiny_model_dir)


def test_warm_start_checks_the_discriminator_before_sft(tmp_path, recipe_factory):
    path = recipe_factory(
        model={"warm_start": "sft"},
        sft={"max_steps": 2, "save_strategy": "no", "per_device_train_batch_size": 8},
        discriminator={"kind": "classifier", "model": "./no-such-classifier"},
    )
    line = error_line("ppo", str(path), "--samples", "0")
    assert "discriminator.model: no such file or directory" in line
    assert not (tmp_path / "out-sft").exists(), "SFT ran before the typo was found"
    line = error_line("check", str(path))
    assert "discriminator.model: no such file or directory" in line


# --------------------------------------------------------------------------------------------------
# Item 8: data files and the evaluate section
# --------------------------------------------------------------------------------------------------


def test_rows_with_empty_responses_are_dropped(tmp_path):
    rows = [{"topic": "a", "post": "b"}, {"topic": "c", "post": ""}, {"topic": "d", "post": " \n"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train = load_raw_splits(data_recipe("d.jsonl", tmp_path))["train"]
    assert train["post"] == ["b"]


def test_all_responses_empty_is_an_error_naming_file_and_column(tmp_path, recipe_factory):
    rows = [{"topic": "a", "post": ""}, {"topic": "c", "post": "   "}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RecipeError) as info:
        load_raw_splits(data_recipe("d.jsonl", tmp_path))
    assert "data.train" in str(info.value) and str(tmp_path / "d.jsonl") in str(info.value)
    assert "'post'" in str(info.value) and "empty" in str(info.value)
    line = error_line("check", str(recipe_factory(data={"train": "d.jsonl"})))
    assert str(tmp_path / "d.jsonl") in line and "'post'" in line


def test_malformed_jsonl_line_is_reported_by_line_number(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"topic": "a", "post": "b"}\n\n{"topic": "c", "post": "d"}\n{"topic": "e", post}\n')
    with pytest.raises(RecipeError) as info:
        load_raw_splits(data_recipe("d.jsonl", tmp_path))
    message = str(info.value)
    assert f"data.train.path: {path}:4: not valid JSON" in message, message
    assert "byte" not in message and "position" not in message


def test_malformed_json_document_is_reported_by_line_number(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"topic": "a", "post": "b"},\n  {"topic": "c" "post": "d"}\n]\n')
    with pytest.raises(RecipeError, match=re.escape(f"data.train.path: {path}:3: not valid JSON")):
        load_raw_splits(data_recipe("d.json", tmp_path))


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_jsonl_says_it_is_empty(content, tmp_path, recipe_factory):
    (tmp_path / "d.jsonl").write_text(content)
    with pytest.raises(RecipeError, match=r"data.train.path: .*d.jsonl is empty"):
        load_raw_splits(data_recipe("d.jsonl", tmp_path))
    line = error_line("check", str(recipe_factory(data={"train": "d.jsonl"})))
    assert "is empty" in line


def test_evaluate_encoder_does_not_inherit_the_generators_trust_remote_code(
    tmp_path, recipe_factory, monkeypatch
):
    import gan_rl.cli.evaluate as evaluation

    seen = []

    class Stop(Exception):
        pass

    def fake_encoder(name, device=None, trust_remote_code=False):
        seen.append(trust_remote_code)
        raise Stop

    monkeypatch.setattr(evaluation, "TextEncoder", fake_encoder)
    generations = tmp_path / "g.jsonl"
    generations.write_text("")
    for evaluate, expected in (({}, False), ({"trust_remote_code": True}, True)):
        recipe = load_recipe(recipe_factory(model={"trust_remote_code": True}, evaluate=evaluate))
        assert recipe.evaluate.trust_remote_code is expected
        with pytest.raises(Stop):
            evaluation.evaluate(recipe, [str(generations)], tmp_path / "eval")
    assert seen == [False, True]


def test_without_the_eval_extra_evaluate_says_what_to_install_and_training_skips_its_plot(
    tmp_path, recipe_factory, monkeypatch, caplog
):
    """scikit-learn, scipy and matplotlib are the ``eval`` extra: ``gan-rl evaluate`` without them is one
    line naming them; a training run writes no ``training_curves.png`` and says why (a fresh venv with
    ``pip install -e .`` alone ran the quickstart this way)."""
    from gan_rl.cli.runs import training_curves

    find_spec = importlib.util.find_spec
    absent = {"sklearn", "matplotlib"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in absent else find_spec(name, *a)
    )
    line = error_line(
        "evaluate", str(recipe_factory()), "--model", f"m={tmp_path}", "--output-dir", str(tmp_path)
    )
    assert "eval extra (scikit-learn, matplotlib not installed): pip install 'gan-rl[eval]'" in line
    logs = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
    with caplog.at_level(logging.INFO, logger="gan_rl.cli.runs"):
        assert training_curves(logs, tmp_path) == []
    assert not (tmp_path / "training_curves.png").exists()
    assert "matplotlib is not installed" in caplog.text
