"""Only what pyproject.toml cannot say: the package list with ``gan_rl.recipes`` mapped onto the
repository's ``recipes/`` folder (setuptools' ``packages.find`` does not combine with a ``package-dir``
entry of a folder outside ``gan_rl/``). Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    # gan_rl's own packages (found, so a new subpackage needs no entry here), and the shipped recipes
    # (YAML only: pyproject.toml's package-data, recipes/accelerate/ included).
    packages=[*find_packages(include=["gan_rl*"]), "gan_rl.recipes"],
    package_dir={"gan_rl.recipes": "recipes"},
)
