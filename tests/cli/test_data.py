"""Data loading for every file type, limits, and the chat / plain prompt formats."""

from __future__ import annotations

import pytest

from gan_rl.cli.data import load_raw_splits, to_trl_dataset, uses_chat_format
from gan_rl.cli.models import build_word_tokenizer, load_tokenizer
from gan_rl.cli.recipe import parse_recipe
from gan_rl.errors import RecipeError
from gan_rl.types import PROMPT_TEXT, REAL_RESPONSE
from tests.conftest import CHAT_TEMPLATE, TWON_DIR, quickstart_texts


def recipe_for(train, tmp_path, **data):
    return parse_recipe(
        {
            "model": {"name_or_path": "x"},
            "data": {"train": train, "prompt_column": "topic", "response_column": "post", **data},
        },
        base_dir=tmp_path,
    )


@pytest.mark.parametrize("kind", ["parquet", "jsonl", "json", "csv"])
def test_each_file_type_loads(kind, data_files, tmp_path):
    splits = load_raw_splits(recipe_for(data_files[kind].name, tmp_path))
    assert len(splits["train"]) == 64
    assert splits["train"][0] == quickstart_texts(64)[0]


def test_limits_and_test_split(data_files, tmp_path):
    recipe = recipe_for(
        "data.csv", tmp_path, test={"path": "data.jsonl"}, max_train_samples=10, max_test_samples=3
    )
    splits = load_raw_splits(recipe)
    assert len(splits["train"]) == 10 and len(splits["test"]) == 3


def test_synthetic_source_is_deterministic(tmp_path):
    a = load_raw_splits(recipe_for({"synthetic": "quickstart", "rows": 20, "seed": 3}, tmp_path))["train"]
    b = load_raw_splits(recipe_for({"synthetic": "quickstart", "rows": 20, "seed": 3}, tmp_path))["train"]
    assert len(a) == 20 and a[:] == b[:]


def test_rows_without_text_are_dropped(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"topic": "a", "post": "b"}\n{"topic": "c", "post": null}\n')
    splits = load_raw_splits(recipe_for("d.jsonl", tmp_path))
    assert len(splits["train"]) == 1


def test_unreadable_file_is_a_recipe_error(tmp_path):
    (tmp_path / "d.parquet").write_text("not parquet")
    with pytest.raises(RecipeError, match="data.train.path: cannot read"):
        load_raw_splits(recipe_for("d.parquet", tmp_path))


def test_plain_format(tmp_path):
    recipe = recipe_for(
        {"synthetic": "quickstart", "rows": 4},
        tmp_path,
        system_prompt="Be brief.",
        prompt_template="Topic: {prompt}\nPost:",
    )
    tok = build_word_tokenizer(["a b c"])
    assert not uses_chat_format(recipe.data, tok)
    ds = to_trl_dataset(load_raw_splits(recipe)["train"], recipe.data, chat=False)
    row = ds[0]
    assert row["prompt"] == f"Be brief.\nTopic: {row[PROMPT_TEXT]}\nPost:"
    assert row[REAL_RESPONSE] == quickstart_texts(4)[0]["post"] or isinstance(row[REAL_RESPONSE], str)


def test_chat_format_with_system_prompt(tmp_path):
    recipe = recipe_for(
        {"synthetic": "quickstart", "rows": 4}, tmp_path, system_prompt="You are a social media user."
    )
    tok = build_word_tokenizer(["a b c"])
    tok.chat_template = CHAT_TEMPLATE
    assert uses_chat_format(recipe.data, tok)
    row = to_trl_dataset(load_raw_splits(recipe)["train"], recipe.data, chat=True)[0]
    assert row["prompt"] == [
        {"role": "system", "content": "You are a social media user."},
        {"role": "user", "content": row[PROMPT_TEXT]},
    ]


def test_chat_format_requires_a_template(tmp_path):
    recipe = recipe_for({"synthetic": "quickstart", "rows": 4}, tmp_path, format="chat")
    with pytest.raises(RecipeError, match="data.format"):
        uses_chat_format(recipe.data, build_word_tokenizer(["a"]))


def test_load_tokenizer_from_checkpoint_pads_left(tiny_chat_model_dir, tmp_path):
    recipe = parse_recipe({"model": {"name_or_path": str(tiny_chat_model_dir)}, "data": {"train": "x.csv"}})
    tok = load_tokenizer(recipe.model, recipe.resolve_path)
    assert tok.padding_side == "left" and tok.pad_token is not None and tok.chat_template


def test_word_tokenizer_round_trip():
    tok = build_word_tokenizer(["pizza is amazing !", "i think rain is awful !"])
    ids = tok("pizza is awful !", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == "pizza is awful !"


@pytest.mark.skipif(
    not (TWON_DIR / "right.train.parquet").is_file(), reason=f"TWON data not found at {TWON_DIR}"
)
def test_twon_parquet_columns(tmp_path):
    recipe = recipe_for(
        str(TWON_DIR / "right.train.parquet"),
        tmp_path,
        prompt_column="annotation",
        response_column="full_text",
        max_train_samples=50,
    )
    ds = load_raw_splits(recipe)["train"]
    assert len(ds) == 50 and all(isinstance(t, str) and t for t in ds["full_text"])


def test_unreachable_hub_dataset_is_a_recipe_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = recipe_for({"hub": "nobody/no-such-dataset", "split": "train"}, tmp_path)
    with pytest.raises(RecipeError, match="data.train.hub: cannot load 'nobody/no-such-dataset'"):
        load_raw_splits(recipe)


@pytest.mark.parametrize("bits", [4, 8])
def test_quantization_settings_become_a_bitsandbytes_config(bits):
    pytest.importorskip("bitsandbytes")
    import torch

    from gan_rl.cli.models import quantization_config
    from gan_rl.cli.recipe import ModelSettings, parse_section

    settings = parse_section(
        ModelSettings,
        {"name_or_path": "x", "lora": {}, "quantization": {"bits": bits, "compute_dtype": "float16"}},
        "model",
    )
    config = quantization_config(settings)
    assert config.load_in_4bit is (bits == 4) and config.load_in_8bit is (bits == 8)
    if bits == 4:
        assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
        assert config.bnb_4bit_compute_dtype == torch.float16


@pytest.mark.parametrize("native", [True, False])
def test_quantization_compute_dtype_auto_follows_the_gpu(monkeypatch, native):
    """``auto`` is bfloat16 only where the GPU computes it natively; float16 on a T4/V100 that would emulate it."""
    import torch

    from gan_rl.cli import models
    from gan_rl.cli.recipe import ModelSettings, parse_section

    monkeypatch.setattr(models, "cuda_native_bf16", lambda: native)
    settings = parse_section(ModelSettings, {"name_or_path": "x", "lora": {}, "quantization": {}}, "model")
    assert settings.quantization.compute_dtype == "auto"
    expected = torch.bfloat16 if native else torch.float16
    assert models.quantization_compute_dtype(settings.quantization.compute_dtype) == expected
    assert models.quantization_compute_dtype("float32") == torch.float32
