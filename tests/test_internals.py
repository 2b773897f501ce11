"""TRL's, transformers', accelerate's and peft's private names are used in two modules only.

``gan_rl/trainer/trl_internals.py`` (trainer level) and ``gan_rl/utils/library_internals.py`` (below it) wrap
each private name with the version it was checked against, so a library release that moves one breaks one
place. This test reads every other module of the package and fails on a use of a name those libraries keep
private: an attribute, a method defined or overridden, or a ``getattr`` string that their own sources define
as ``self._name`` / ``def _name``, and the few public-looking names they do not document.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gan_rl"
FENCED = {PACKAGE / "trainer" / "trl_internals.py", PACKAGE / "utils" / "library_internals.py"}
# The library modules whose private names gan-rl could reach for: the trainers it subclasses, their
# configs and callbacks, the model and config classes, the DeepSpeed glue, accelerate, peft.
LIBRARY_MODULES = (
    "transformers.trainer",
    "transformers.trainer_callback",
    "transformers.training_args",
    "transformers.configuration_utils",
    "transformers.modeling_utils",
    "transformers.integrations.deepspeed",
    "trl.trainer.grpo_trainer",
    "trl.trainer.rloo_trainer",
    "trl.trainer.dpo_trainer",
    "trl.trainer.sft_trainer",
    "trl.distributed",
    "accelerate.accelerator",
    "peft.peft_model",
)
# Public-looking, but in no documented API (transformers 5.x, TRL 1.16).
UNDOCUMENTED = {"callback_handler", "loss_is_scaled_for_ga", "DistributedBackend"}


def library_private_names() -> set[str]:
    names: set[str] = set()
    for module in LIBRARY_MODULES:
        source = inspect.getsource(importlib.import_module(module))
        for groups in re.findall(
            r"(?:self|cls)\.(_[A-Za-z]\w*)|def (_[A-Za-z]\w*)|^(_[A-Za-z]\w*) *=", source, re.M
        ):
            names.update(n for n in groups if n and not n.startswith("__"))
    return names


def uses(path: Path, names: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        name = None
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = node.name
        elif isinstance(node, ast.ImportFrom):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name in UNDOCUMENTED]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
        ):
            name = node.args[1].value
        if isinstance(name, str) and (name in names or name in UNDOCUMENTED):
            found.append(f"{node.lineno}: {name}")
    return found


def test_the_libraries_private_names_are_used_in_the_fenced_modules_only():
    names = library_private_names()
    assert {"_metrics", "_get_train_sampler", "_precompute_ref_logps", "_train_batch_size"} <= names
    outside = [
        f"{path.relative_to(PACKAGE.parent)}:{use}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in FENCED
        for use in uses(path, names)
    ]
    assert not outside, (
        "private library names outside trl_internals.py / library_internals.py:\n" + "\n".join(outside)
    )


def test_the_check_sees_a_private_use():
    """The scan itself: a module that reaches into a trainer's private state is caught."""
    names = library_private_names()
    sample = PACKAGE.parent / "tests" / "_internals_sample.py"
    sample.write_text("def f(trainer):\n    return trainer._metrics, trainer.callback_handler\n")
    try:
        assert [u.split(": ")[1] for u in uses(sample, names)] == ["_metrics", "callback_handler"]
    finally:
        sample.unlink()
