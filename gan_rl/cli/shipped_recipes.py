"""The recipes shipped inside the package, found by name: ``gan-rl ppo twon`` from any directory.

The repository's ``recipes/`` is the single source: ``setup.py`` installs it as the package data of
``gan_rl.recipes`` (a wheel copies the files; an editable install reads the folder itself), so a
``pip install`` without a checkout still has them. A path that exists always wins over a name; relative
paths inside a shipped recipe (data files) resolve against the recipe file, as for any recipe.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from gan_rl.errors import RecipeError

PACKAGE = "gan_rl.recipes"
SUFFIXES = (".yaml", ".yml")


def shipped_dir() -> Path | None:
    """The folder of the shipped recipes: ``gan_rl.recipes`` of an installed wheel, else the checkout's
    ``recipes/`` beside ``gan_rl/`` (an editable install, whose import hook does not resolve a folder
    without ``__init__.py`` inside a package, or a checkout on ``sys.path``); None without either."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    folders.append(Path(__file__).resolve().parents[2] / "recipes")  # gan_rl/cli/ -> the checkout
    return next((f for f in folders if f.is_dir() and any(f.glob("*.yaml"))), None)


def shipped_names() -> list[str]:
    """The names ``gan-rl COMMAND NAME`` accepts (the recipe files' stems; ``accelerate/`` holds launcher
    configs, not recipes)."""
    folder = shipped_dir()
    if folder is None:
        return []
    return sorted(p.stem for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())


def resolve_recipe(argument: str) -> str:
    """The recipe file a command reads: ``argument`` itself when such a file or folder exists, or it is a
    path (it has a directory part: the loader then says it is missing); otherwise the shipped recipe of
    that name, with or without ``.yaml``. An unknown name is one :class:`RecipeError` listing the names."""
    path = Path(argument).expanduser()
    if path.exists() or len(path.parts) != 1 or argument in ("", ".", ".."):
        return argument
    stem = path.stem if path.suffix in SUFFIXES else path.name
    folder = shipped_dir()
    if folder is not None:
        for suffix in SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return str(candidate)
    names = shipped_names()
    listed = ", ".join(names) if names else "none (the package data is missing; reinstall gan-rl)"
    raise RecipeError(
        f"recipe: no file {argument!r} here, and gan-rl ships no recipe of that name; shipped: {listed}."
    )
