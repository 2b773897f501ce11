"""Every ``gan-rl`` command in README.md runs as written.

README is the first thing a user copies from, so a renamed option, a moved recipe or a recipe field that no
longer validates must fail here, not in a user's terminal. Each command's arguments are parsed by the
command itself (click: an unknown option or a wrong value fails), and the recipe it names is validated by
``gan-rl check`` with the same ``--set`` overrides, for the algorithm a training command would run. No model
is loaded and nothing trains.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gan_rl.cli.main import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TWON = REPO.parent / "shared" / "data" / "twon"
# What `gan-rl check --algorithm` accepts for each training command (TRL's names are the same commands).
TRAINING = {"ppo", "reinforce", "grpo", "rloo", "gumbel", "sft", "spin"}


def readme_commands() -> list[str]:
    """The ``gan-rl`` lines of README's bash blocks, continuation lines joined and comments cut."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("gan-rl "):
                commands.append(line)
    return commands


def test_readme_shows_the_commands_a_user_starts_with() -> None:
    names = {shlex.split(line)[1] for line in readme_commands()}
    assert {"ppo", "spin", "evaluate", "check"} <= names, names


def recipe_overrides(args: list[str]) -> list[str]:
    """The ``--set`` pairs of a command line, as ``gan-rl check`` takes them."""
    out = []
    for i, arg in enumerate(args):
        if arg == "--set":
            out += ["--set", args[i + 1]]
    return out


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_parses_and_its_recipe_checks(line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    _, name, *args = shlex.split(line)
    command = main.get_command(click.Context(main), name)
    assert command is not None, f"README names a command gan-rl does not have: {name}"
    command.make_context(name, list(args))  # every option exists and its value parses

    recipe = args[0]
    if "twon" in recipe and not TWON.is_dir():
        pytest.skip(f"{recipe} reads the TWON data: {TWON} is absent (and tests do not download)")
    algorithm = name if name in TRAINING else "ppo"
    algorithm = {"grpo": "ppo", "rloo": "reinforce"}.get(algorithm, algorithm)
    result = CliRunner().invoke(main, ["check", recipe, "--algorithm", algorithm, *recipe_overrides(args)])
    assert result.exit_code == 0, f"{line}\n{result.output}"
    assert "valid for" in result.output
