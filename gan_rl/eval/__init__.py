"""Measuring generations against real responses: the metrics (two-sample tests, MAUVE, Fréchet,
diversity), the evaluation on plain lists of texts that ``gan-rl evaluate`` wraps, its report, and the
plots. scikit-learn, scipy and matplotlib are imported here only.

Imported lazily, as the top-level package is, so that importing one module of this package (the
selection config, which recipes read) loads neither torch nor scikit-learn::

    from gan_rl.eval import EvaluationConfig, evaluate_texts, save_evaluation
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "EvaluationConfig": "gan_rl.eval.evaluation",
    "evaluate_texts": "gan_rl.eval.evaluation",
    "markdown_report": "gan_rl.eval.report",
    "save_evaluation": "gan_rl.eval.report",
    "TextEncoder": "gan_rl.eval.metrics",
    "self_bleu": "gan_rl.eval.metrics",
}

__all__ = [
    "EvaluationConfig",
    "TextEncoder",
    "evaluate_texts",
    "markdown_report",
    "save_evaluation",
    "self_bleu",
]

if TYPE_CHECKING:
    from gan_rl.eval.evaluation import EvaluationConfig, evaluate_texts
    from gan_rl.eval.metrics import TextEncoder, self_bleu
    from gan_rl.eval.report import markdown_report, save_evaluation


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gan_rl.eval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
