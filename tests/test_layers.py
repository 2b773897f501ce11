"""The package's layers: each imports only those below it, no module imports itself back through others,
and the evaluation's packages (scikit-learn, scipy, matplotlib: the ``eval`` extra) stay in ``eval``.

Read statically (every import statement, those inside functions too), so the test needs nothing loaded.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gan_rl"

# Layer -> the layers it may import (besides itself). gan_rl/__init__.py and __main__.py sit on top.
BASE = {"errors", "types"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "types": set(),
    "utils": BASE,
    "discriminator": {"utils", *BASE},
    "trainer": {"discriminator", "utils", *BASE},
    "gumbel": {"trainer", "discriminator", "utils", *BASE},
    "eval": {"utils", *BASE},
    "cli": {"trainer", "gumbel", "eval", "discriminator", "utils", *BASE},
}
EVAL_ONLY = ("sklearn", "scipy", "matplotlib")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> every module it imports (absolute names)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        graph[name]  # noqa: B018 (a module importing nothing is still a node)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                graph[name].add(node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names)
    return graph


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "gan_rl" and len(parts) > 1 else None


def test_every_module_is_in_a_layer():
    strays = [m for m in imports() if layer(m) not in ALLOWED and m not in ("gan_rl", "gan_rl.__main__")]
    assert not strays, f"modules outside the layers: {strays}"


def test_layers_import_only_downward():
    wrong = sorted(
        f"{m} imports {d}"
        for m, deps in imports().items()
        if layer(m) in ALLOWED
        for d in deps
        if d.startswith("gan_rl") and layer(d) != layer(m) and layer(d) not in ALLOWED[layer(m)]
    )
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_cycle():
    graph = {m: {d for d in deps if d.startswith("gan_rl.")} for m, deps in imports().items()}
    # A package's __init__ may re-export its modules (gan_rl.gumbel): an edge to a package is one to its
    # __init__, which the modules of that package never import.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycle = stack[stack.index(d) :] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d in graph and d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_evaluation_packages_stay_in_eval():
    """The training path imports none of the ``eval`` extra's packages (transformers or datasets may
    import scipy themselves; gan-rl does not rely on it)."""
    wrong = sorted(
        f"{m} imports {d}"
        for m, deps in imports().items()
        if layer(m) != "eval"
        for d in deps
        if d.split(".")[0] in EVAL_ONLY
    )
    assert not wrong, wrong


def test_the_public_api_is_importable_lazily():
    import subprocess
    import sys

    code = (
        "import sys, gan_rl; assert 'torch' not in sys.modules and 'trl' not in sys.modules; "
        "missing = [n for n in gan_rl.__all__ if getattr(gan_rl, n, None) is None]; "
        "assert not missing, missing; print(sorted(gan_rl.__all__))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "AdversarialGRPOTrainer" in result.stdout and "Adversary" in result.stdout
    # The command line's own objects stay in gan_rl.cli: the top level is the library.
    assert not {"'Recipe'", "'load_recipe'", "'run'"} & set(result.stdout.strip()[1:-1].split(", "))


def test_the_library_speaks_python():
    """Below ``cli/`` errors are Python exceptions in Python's terms (:class:`gan_rl.errors.InputError`,
    which the command line renders with its own flags and keys): no module there raises the command line's
    ``RecipeError`` or names a command-line flag in a string."""
    import re

    flag = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if layer(module_name(path)) in ("cli", None):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and "RecipeError" in ast.unparse(node):
                wrong.append(f"{path.name}:{node.lineno}: raises RecipeError")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and flag.search(node.value):
                wrong.append(f"{path.name}:{node.lineno}: names {flag.search(node.value).group()}")
    assert not wrong, "the library speaks the command line's language:\n" + "\n".join(wrong)
