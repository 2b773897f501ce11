"""Recipes by name: ``gan-rl ppo twon`` reads the recipe shipped inside the package when no such file is
in the current directory (a real path always wins), an unknown name is one line listing the shipped
names, and the wheel carries the repository's ``recipes/`` (the one source) as ``gan_rl/recipes/``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from gan_rl.cli.main import main
from gan_rl.cli.shipped_recipes import resolve_recipe, shipped_dir, shipped_names
from gan_rl.errors import RecipeError
from tests.conftest import ROOT, base_recipe, write_recipe

REPO_RECIPES = ROOT / "recipes"


def test_the_shipped_recipes_are_the_repositorys(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert shipped_dir().resolve() == REPO_RECIPES.resolve()  # editable install or checkout: no copy
    assert shipped_names() == sorted(p.stem for p in REPO_RECIPES.glob("*.yaml"))
    assert {"quickstart", "twon", "smollm2-twon"} <= set(shipped_names())


@pytest.mark.parametrize("argument", ["twon", "twon.yaml", "smollm2-twon", "quickstart"])
def test_a_name_finds_the_shipped_recipe_from_any_directory(argument, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    found = Path(resolve_recipe(argument))
    assert found.parent.resolve() == REPO_RECIPES.resolve()
    assert found.name == argument.removesuffix(".yaml") + ".yaml"


def test_a_real_path_wins_over_a_shipped_name(monkeypatch, tmp_path, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    write_recipe(tmp_path / "twon.yaml", base_recipe(tiny_model_dir, tmp_path / "out"))
    assert resolve_recipe("twon.yaml") == "twon.yaml"
    result = CliRunner().invoke(main, ["check", "twon.yaml"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("twon.yaml: valid for ppo (train: 64 rows, test: 8 rows).")
    # A path with a directory part never turns into a name: the loader says it is missing.
    assert resolve_recipe("sub/twon.yaml") == "sub/twon.yaml"


def test_check_by_name_reads_the_shipped_recipe(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["check", "quickstart"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{REPO_RECIPES.resolve() / 'quickstart.yaml'}: valid for ppo (")


def test_an_unknown_name_is_one_line_listing_the_shipped_names(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match="ships no recipe of that name"):
        resolve_recipe("nope")
    for command in (["ppo", "nope"], ["sft", "nope.yaml"], ["check", "nope"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2, result.output
        assert result.output == (
            f"error: recipe: no file {command[1]!r} here, and gan-rl ships no recipe of that name; "
            f"shipped: {', '.join(shipped_names())}.\n"
        )


def test_relative_paths_of_a_shipped_recipe_resolve_against_the_recipe_file(monkeypatch, tmp_path):
    from gan_rl.cli.recipe import load_recipe

    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(resolve_recipe("twon"))
    assert recipe.base_dir == REPO_RECIPES.resolve()
    assert recipe.resolve_path("x.parquet") == REPO_RECIPES.resolve() / "x.parquet"


@pytest.mark.slow
def test_the_wheel_ships_every_recipe(tmp_path):
    """A non-editable wheel holds recipes/*.yaml and recipes/accelerate/*.yaml under gan_rl/recipes/."""
    source = tmp_path / "src"  # a copy: building in the checkout would leave build/ there
    skip = shutil.ignore_patterns(
        ".git", ".venv", "outputs", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
    )
    shutil.copytree(ROOT, source, ignore=skip)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "-w",
            str(wheels),
            "--no-deps",
            "--no-build-isolation",
            "-q",
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = wheels.glob("gan_rl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"gan_rl/recipes/{p.relative_to(REPO_RECIPES)}" for p in REPO_RECIPES.rglob("*.yaml")}
    assert expected and expected <= names
    assert "gan_rl/cli/shipped_recipes.py" in names
