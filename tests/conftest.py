"""Fixtures: tiny models built from a config, local data files, and recipe helpers. No network."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
TWON_DIR = ROOT.parent / "shared" / "data" / "twon"

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

TINY_LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 128,
}


def quickstart_texts(rows: int = 256) -> list[dict[str, str]]:
    from gan_rl.cli.synthetic import quickstart_rows

    return quickstart_rows(rows, seed=0)


def _quickstart_pairs() -> tuple[list, list]:
    from gan_rl.types import Pair

    real = [Pair(r["topic"] + "\n", r["topic"], r["post"]) for r in quickstart_texts(64)]
    # Clearly fake: the prompt's own words, shuffled; separable from real posts.
    fake = [Pair(p.prompt, p.prompt_text, " ".join(reversed(p.prompt_text.split()))) for p in real]
    return real, fake


# Real quickstart pairs and clearly fake ones, for the discriminator tests.
REAL, FAKE = _quickstart_pairs()


def head_config(**kw):
    """A small head (fast on CPU), with ``kw`` overriding any DiscriminatorConfig field."""
    from gan_rl.discriminator.config import DiscriminatorConfig

    base = {
        "d_model": 32,
        "num_layers": 1,
        "num_heads": 2,
        "max_length": 40,
        "batch_size": 32,
        "learning_rate": 3e-3,
        "dropout": 0.0,
    }
    return DiscriminatorConfig(**{**base, **kw})


def make_head(generator, **kw):
    """A head discriminator reading ``generator``'s hidden states (the ``generator`` fixture)."""
    from gan_rl.discriminator.encoder import FrozenEncoder
    from gan_rl.discriminator.factory import build_discriminator

    model, tok = generator
    encoder = FrozenEncoder(tok, model.config.hidden_size, generator_format=True, model=model)
    return build_discriminator(head_config(**kw), encoder=encoder)


def _save_tiny(path: Path, chat: bool, head: str = "causal") -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from gan_rl.cli.models import build_word_tokenizer

    rows = quickstart_texts()
    tok = build_word_tokenizer(
        [r["topic"] for r in rows] + [r["post"] for r in rows] + ["user", "assistant", "system", ":"]
    )
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    cfg = dict(TINY_LLAMA)
    config = AutoConfig.for_model(
        cfg.pop("model_type"),
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **cfg,
    )
    torch.manual_seed(0)
    cls = AutoModelForCausalLM if head == "causal" else AutoModelForSequenceClassification
    if head != "causal":
        config.num_labels = 1
    model = cls.from_config(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama causal LM with a word-level tokenizer (plain prompts)."""
    return _save_tiny(tmp_path_factory.mktemp("tiny-plain"), chat=False)


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory) -> Path:
    """The same tiny model with a chat template (conversational prompts)."""
    return _save_tiny(tmp_path_factory.mktemp("tiny-chat"), chat=True)


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory) -> Path:
    """A tiny sequence-classification checkpoint (for kind: classifier)."""
    return _save_tiny(tmp_path_factory.mktemp("tiny-cls"), chat=False, head="classifier")


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    """(model, tokenizer) of the tiny plain model, loaded once per test module."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture()
def data_files(tmp_path) -> dict[str, Path]:
    """The quickstart rows as parquet, jsonl, json and csv files (columns topic, post)."""
    import pandas as pd

    rows = quickstart_texts(64)
    df = pd.DataFrame(rows)
    files = {
        "parquet": tmp_path / "data.parquet",
        "jsonl": tmp_path / "data.jsonl",
        "json": tmp_path / "data.json",
        "csv": tmp_path / "data.csv",
    }
    df.to_parquet(files["parquet"])
    files["jsonl"].write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    files["json"].write_text(json.dumps(rows))
    df.to_csv(files["csv"], index=False)
    return files


# The base recipe's small head; a classifier or adapter rejects these fields, so it drops them unless a test
# sets them.
BASE_HEAD = {"d_model": 32, "num_layers": 1, "num_heads": 2}


# The small, fast discriminator of the end-to-end runs (a DiscriminatorConfig's fields).
SMALL_DISCRIMINATOR = {
    **BASE_HEAD,
    "max_length": 40,
    "batch_size": 16,
    "updates_per_round": 1,
    "warmup_samples": 8,
    "warmup_updates": 2,
    # The guard off: whether it skips a round hangs on the discriminator's accuracy, whose last bits
    # differ between CPUs, so the rounds the tests count would too. test_stability tests it.
    "max_accuracy": 1.0,
}


def base_recipe(model_dir: Path, output_dir: Path, **sections) -> dict:
    """A small, fast recipe for end-to-end runs on CPU."""
    recipe = {
        "model": {"name_or_path": str(model_dir), "gradient_checkpointing": False},
        "data": {
            "train": {"synthetic": "quickstart", "rows": 64, "seed": 0},
            "test": {"synthetic": "quickstart", "rows": 8, "seed": 1},
            "prompt_column": "topic",
            "response_column": "post",
        },
        "discriminator": dict(SMALL_DISCRIMINATOR),
        "trainer": {
            "output_dir": str(output_dir),
            "max_steps": 3,
            "per_device_train_batch_size": 8,
            "num_generations": 4,
            "max_completion_length": 6,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "seed": 0,
        },
    }
    for name, values in sections.items():
        recipe.setdefault(name, {}).update(values)
    disc = recipe["discriminator"]
    if isinstance(disc, dict) and disc.get("kind") in ("classifier", "adapter"):
        for key in set(BASE_HEAD) - set(sections.get("discriminator") or {}):
            del disc[key]
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture()
def recipe_factory(tmp_path, tiny_model_dir):
    """Write a recipe (the base one, with section updates) and return its path."""

    def make(name: str = "recipe.yaml", model_dir: Path | None = None, **sections) -> Path:
        recipe = base_recipe(model_dir or tiny_model_dir, tmp_path / "out", **sections)
        return write_recipe(tmp_path / name, recipe)

    return make
