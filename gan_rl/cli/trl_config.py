"""Building TRL's configs from a recipe: the algorithm's (``GRPOConfig``, ``RLOOConfig``, ``GumbelConfig``)
and SFT's (``SFTConfig``), with TRL's complaints turned into one-line recipe errors, the dtype ``auto``
resolved, and the SFT run's early stopping.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from dataclasses import dataclass
from typing import Any

from gan_rl.cli.algorithms import ALGORITHMS, get_algorithm
from gan_rl.cli.recipe import Recipe, coerce, unknown_key_error
from gan_rl.errors import RecipeError
from gan_rl.utils.hardware import Precision, log_precision, resolve_precision


def build_trainer_config(recipe: Recipe, algorithm: str, **forced: Any) -> Any:
    """Build TRL's config for ``algorithm`` from the recipe, turning TRL's complaints into RecipeErrors.

    A ``trainer`` field that only another algorithm's config has is an error that says where it belongs,
    so that one recipe serves every algorithm. A ``trainer`` field that *every* other algorithm's config has
    (e.g. ``num_iterations``, shared by ``ppo`` and ``reinforce``, meaningless to ``gumbel``) is a setting of
    the other family: it is left out for this algorithm, and logged.
    """
    spec = get_algorithm(algorithm)
    algorithm = spec.name  # TRL's names (grpo, rloo) read their algorithm's section
    if algorithm == "gumbel" and recipe.discriminator.reward.length_coef > 0:
        raise RecipeError(
            "discriminator.reward.length_coef: gumbel back-propagates through the discriminator, and a "
            "count of words has no gradient; set it to 0, or train with ppo or reinforce."
        )
    cls = spec.config_class()
    own_fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    others = {name: a.config_class() for name, a in ALGORITHMS.items() if name != algorithm}
    other_fields = {
        name: {f.name for f in dataclasses.fields(other) if f.init} for name, other in others.items()
    }
    hints = typing.get_type_hints(cls)
    ignored: list[str] = []
    for section in ("trainer", algorithm):
        for key in getattr(recipe, section):
            if key in own_fields:
                continue
            owners = [name for name, fields in other_fields.items() if key in fields]
            if section == "trainer" and len(owners) == len(other_fields) > 1:
                ignored.append(key)
                continue
            if section == "trainer" and owners:
                classes = " and ".join(f"{others[o].__name__} ({o})" for o in owners)
                targets = " and ".join(f"'{o}:'" for o in owners)
                raise RecipeError(
                    f"trainer.{key}: only {classes} {'has' if len(owners) == 1 else 'have'} this field; "
                    f"move it into the {targets} section{'s' if len(owners) > 1 else ''} so that "
                    f"'{algorithm}' can use the same recipe."
                )
            err = unknown_key_error(key, list(own_fields), section)
            raise RecipeError(f"{err} ({section} holds {cls.__name__} fields.)")
    for section, other_cls in others.items():
        other_hints = typing.get_type_hints(other_cls)
        for key, value in getattr(recipe, section).items():
            if key not in other_fields[section]:
                raise unknown_key_error(key, sorted(other_fields[section]), section)
            coerce(value, other_hints.get(key, Any), f"{section}.{key}")
    if ignored:
        logging.getLogger(__name__).info(
            "%s does not use trainer.%s (fields of %s only).",
            algorithm,
            ", trainer.".join(ignored),
            " and ".join(others),
        )
    kwargs = {}
    for key, value in recipe.trainer_args(algorithm).items():
        if key in ignored:
            continue
        section = algorithm if key in getattr(recipe, algorithm) else "trainer"
        kwargs[key] = _coerce_trl(value, hints.get(key, Any), f"{section}.{key}")
    if recipe.model.gradient_checkpointing is not None:
        if (
            kwargs.get("gradient_checkpointing", recipe.model.gradient_checkpointing)
            != recipe.model.gradient_checkpointing
        ):
            raise RecipeError(
                "model.gradient_checkpointing: contradicts trainer.gradient_checkpointing; set one."
            )
        kwargs["gradient_checkpointing"] = recipe.model.gradient_checkpointing
    kwargs.update(forced)
    default_bf16(recipe, kwargs)
    if kwargs.get("use_vllm"):
        _check_vllm(algorithm if "use_vllm" in getattr(recipe, algorithm) else "trainer")
    from gan_rl.utils.backends import check_backend_request

    check_backend_request(kwargs, "trainer")  # building the config starts the processes: check first
    config = _instantiate(cls, kwargs, "trainer")
    _check_save_steps(config, "save_steps" in recipe.trainer_args(algorithm))
    return config


def _check_save_steps(config: Any, given: bool) -> None:
    """Refuse checkpoints inside TRL's generation cycle (:func:`save_steps_problem`)."""
    from gan_rl.trainer.trl_internals import save_steps_problem

    problem = save_steps_problem(config)
    if problem is not None:
        default = "" if given else " (TRL default)"
        raise RecipeError(f"trainer.save_steps: {int(config.save_steps)}{default} {problem}.")


def precision_of(recipe: Recipe, use_cpu: bool = False) -> Precision:
    """The dtype ``model.dtype`` resolves to on this machine (``auto``: bfloat16 where native), and why."""
    model = recipe.model
    full = model.lora is None and model.quantization is None
    return resolve_precision(model.dtype, use_cpu=use_cpu, full_weights=full)


def with_resolved_dtype(recipe: Recipe, use_cpu: bool = False) -> tuple[Recipe, Precision]:
    """The recipe with ``model.dtype: auto`` replaced by the dtype it resolves to here (so the weights
    load in it and ``recipe.yaml`` records what ran), and the choice, logged once."""
    precision = precision_of(recipe, use_cpu)
    log_precision(precision)
    if recipe.model.dtype == precision.dtype:
        return recipe, precision
    return dataclasses.replace(
        recipe, model=dataclasses.replace(recipe.model, dtype=precision.dtype)
    ), precision


def default_bf16(recipe: Recipe, kwargs: dict[str, Any]) -> None:
    """``bf16`` (TRL's mixed precision, which TRL turns on by default) from the same rule as the weights'
    dtype when the recipe leaves it unset, so that weights and autocast never disagree: float32 weights
    are never autocast to an emulated bfloat16, and a CPU-only machine needs no ``bf16: false``."""
    if kwargs.get("bf16") is None and not kwargs.get("fp16"):
        kwargs["bf16"] = precision_of(recipe, bool(kwargs.get("use_cpu"))).bf16


def _check_vllm(section: str) -> None:
    """``use_vllm: true`` needs vLLM installed; TRL would import it only after the model has loaded."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise RecipeError(
            f"{section}.use_vllm: generation with vLLM needs the vllm package, which is not installed: "
            "pip install vllm (or set use_vllm: false)."
        )


def _instantiate(cls: type, kwargs: dict[str, Any], section: str) -> Any:
    """Build a TRL config, turning TRL's own validation errors into a RecipeError naming the section."""
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        hint = f" (on a machine without a GPU set {section}.bf16: false)" if "bf16" in str(exc) else ""
        raise RecipeError(f"{section}: {cls.__name__} rejected the settings: {exc}{hint}") from None


def _coerce_trl(value: Any, tp: Any, where: str) -> Any:
    """Type-check a TRL field where its annotation is simple; leave complex ones to TRL."""
    try:
        return coerce(value, tp, where)
    except RecipeError:
        args = typing.get_args(tp)
        simple = {int, float, bool, str, type(None)}
        if tp in simple or (args and all(a in simple for a in args)):
            raise
        return value


# Machine-wide settings an SFT run takes from ``trainer`` unless ``sft:`` sets them itself.
SHARED_WITH_SFT = ("seed", "bf16", "fp16", "use_cpu", "report_to", "gradient_checkpointing")


def sft_output_dir(recipe: Recipe) -> str:
    """Where ``gan-rl sft`` writes: ``sft.output_dir``, else ``trainer.output_dir`` + ``-sft``."""
    if "output_dir" in recipe.sft:
        return str(recipe.sft["output_dir"])
    return str(recipe.trainer.get("output_dir", "outputs/gan-rl")).rstrip("/") + "-sft"


# The ``sft:`` keys that are gan-rl's, not SFTConfig fields: transformers' ``EarlyStoppingCallback``
# arguments (evaluations without improvement before SFT stops; the improvement that counts).
EARLY_STOPPING_KEYS = {"early_stopping_patience": int, "early_stopping_threshold": float}


@dataclass(frozen=True)
class EarlyStopping:
    """``sft.early_stopping_patience`` / ``sft.early_stopping_threshold``, checked."""

    patience: int
    threshold: float = 0.0


def sft_early_stopping(recipe: Recipe) -> EarlyStopping | None:
    """The SFT run's early stopping, or None when ``sft.early_stopping_patience`` is unset.

    It selects on the validation NLL, so it needs ``data.validation`` or ``data.validation_fraction``:
    stopping on ``data.test`` would choose the model on the split that evaluation reports.
    """
    if recipe.sft.get("early_stopping_patience") is None:
        if "early_stopping_threshold" in recipe.sft:
            raise RecipeError("sft.early_stopping_threshold: needs sft.early_stopping_patience too.")
        return None
    values = {
        key: coerce(recipe.sft[key], tp, f"sft.{key}")
        for key, tp in EARLY_STOPPING_KEYS.items()
        if key in recipe.sft
    }
    stop = EarlyStopping(
        patience=values["early_stopping_patience"], threshold=values.get("early_stopping_threshold", 0.0)
    )
    if stop.patience < 1:
        raise RecipeError(
            f"sft.early_stopping_patience: expected at least 1 evaluation, got {stop.patience}."
        )
    if stop.threshold < 0:
        raise RecipeError(f"sft.early_stopping_threshold: expected 0 or more, got {stop.threshold}.")
    if recipe.data.validation is None and recipe.data.validation_fraction is None:
        raise RecipeError(
            "sft.early_stopping_patience: early stopping selects on a validation split; add "
            "data.validation (a source) or data.validation_fraction (carved from train)."
        )
    return stop


def build_sft_config(recipe: Recipe, **forced: Any) -> Any:
    """TRL's ``SFTConfig`` from the ``sft:`` section (plus the machine settings of ``trainer``).

    With a validation split, SFT evaluates its NLL every ``eval_steps`` unless ``sft.eval_strategy`` says
    otherwise; with early stopping it also keeps the best checkpoint (``load_best_model_at_end`` on
    ``eval_loss``, a checkpoint at every evaluation) and ends with that model.
    """
    from trl import SFTConfig

    own_fields = {f.name for f in dataclasses.fields(SFTConfig) if f.init}
    hints = typing.get_type_hints(SFTConfig)
    kwargs: dict[str, Any] = {k: recipe.trainer[k] for k in SHARED_WITH_SFT if k in recipe.trainer}
    for key, value in recipe.sft.items():
        if key in EARLY_STOPPING_KEYS:
            continue
        if key not in own_fields:
            valid = sorted(own_fields | set(EARLY_STOPPING_KEYS))
            err = unknown_key_error(key, valid, "sft")
            raise RecipeError(f"{err} (sft holds SFTConfig fields.)")
        kwargs[key] = _coerce_trl(value, hints.get(key, Any), f"sft.{key}")
    kwargs["output_dir"] = sft_output_dir(recipe)
    has_validation = recipe.data.validation is not None or recipe.data.validation_fraction is not None
    if has_validation and "eval_strategy" not in kwargs:
        kwargs["eval_strategy"] = "steps"
    if sft_early_stopping(recipe) is not None:
        if kwargs.get("eval_strategy") == "no" or kwargs.get("save_strategy") == "no":
            which = "eval_strategy" if kwargs.get("eval_strategy") == "no" else "save_strategy"
            raise RecipeError(
                f"sft.{which}: 'no' leaves early stopping (sft.early_stopping_patience) nothing to select "
                f"from; drop it (evaluations and checkpoints then follow sft.eval_steps)."
            )
        kwargs.setdefault("save_strategy", kwargs["eval_strategy"])
        if kwargs["save_strategy"] == "steps" and "save_steps" not in kwargs:
            # a checkpoint at every evaluation (transformers' eval_steps default: logging_steps)
            logging_steps = {f.name: f.default for f in dataclasses.fields(SFTConfig)}["logging_steps"]
            kwargs["save_steps"] = kwargs.get("eval_steps") or kwargs.get("logging_steps", logging_steps)
        kwargs.setdefault("load_best_model_at_end", True)
        kwargs.setdefault("metric_for_best_model", "eval_loss")
        kwargs.setdefault("greater_is_better", False)
    if recipe.model.gradient_checkpointing is not None:
        kwargs["gradient_checkpointing"] = recipe.model.gradient_checkpointing
    kwargs.update(forced)
    default_bf16(recipe, kwargs)
    from gan_rl.utils.backends import check_backend_request

    check_backend_request(kwargs, "sft")
    return _instantiate(SFTConfig, kwargs, "sft")
