"""Building TRL's configs from a recipe: the algorithm's (``GRPOConfig``, ``RLOOConfig``, ``GumbelConfig``),
SFT's (``SFTConfig``) and SPIN's (``SpinConfig``, TRL's ``DPOConfig`` with SPIN's fields), with TRL's complaints turned into one-line recipe errors, the dtype ``auto``
resolved, and the SFT run's early stopping.

Values that TRL accepts but torch or transformers refuse later (``learning_rate: -1``), or that train
nothing while the run reports success (``max_steps: 0``, a training set smaller than one batch), are
refused here too (:mod:`gan_rl.utils.training_values`, :func:`check_train_rows`), so that ``gan-rl check``
says so before any model loads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gan_rl.cli.algorithms import ALGORITHMS, get_algorithm
from gan_rl.cli.recipe import Recipe, coerce, unknown_key_error
from gan_rl.errors import ConfigError, RecipeError
from gan_rl.utils.hardware import Precision, log_precision, resolve_precision
from gan_rl.utils.training_values import training_value_problem

# TRL's group baselines (GRPO, RLOO) compare the samples of one prompt: at least two (TRL divides by it
# before it says so, so 0 would be a ZeroDivisionError).
MIN_GENERATIONS = {"ppo": 2, "reinforce": 2}


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
    hints = typing.get_type_hints(cls)
    ignored = _route_trainer_fields(recipe, algorithm, cls)
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

    def section_of(key: str) -> str:
        return algorithm if key in getattr(recipe, algorithm) else "trainer"

    _check_values(cls, kwargs, section_of, MIN_GENERATIONS.get(algorithm, 1))
    if kwargs.get("use_vllm"):
        _check_vllm(section_of("use_vllm"))
    from gan_rl.cli.backends import check_backend_request

    check_backend_request(kwargs, "trainer")  # building the config starts the processes: check first
    config = _instantiate(cls, kwargs, section_of)
    _check_save_steps(config, "save_steps" in recipe.trainer_args(algorithm))
    given = "max_completion_length" in recipe.trainer_args(algorithm)
    _check_configured_positions(
        recipe, config.max_completion_length, section_of("max_completion_length"), given
    )
    _check_rows_bound(recipe, algorithm, config)
    return config


def _route_trainer_fields(recipe: Recipe, algorithm: str, cls: type) -> list[str]:
    """Check which config each ``trainer`` / per-algorithm field belongs to, for ``algorithm``'s config
    ``cls``: a field of another algorithm's config only is an error saying where to move it; one that every
    other algorithm's config has is that family's setting, left out here (the names returned, and logged);
    the other algorithms' own sections are type-checked against their configs."""
    own_fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    others = {name: a.config_class() for name, a in ALGORITHMS.items() if name != algorithm}
    other_fields = {
        name: {f.name for f in dataclasses.fields(other) if f.init} for name, other in others.items()
    }
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
    return ignored


def _config_values(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What the config will hold: its defaults, updated with what was given."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return {**values, **kwargs}


def _check_values(
    cls: type, kwargs: dict[str, Any], section_of: Callable[[str], str], min_generations: int = 1
) -> None:
    """Refuse, before TRL builds the config, the values it would take and torch or transformers refuse
    later, or that would train nothing (:func:`gan_rl.utils.training_values.training_value_problem`)."""
    problem = training_value_problem(_config_values(cls, kwargs), min_generations)
    if problem is not None:
        name, message = problem
        default = "" if name in kwargs else " (the default)"
        raise RecipeError(f"{section_of(name)}.{name}: {message[:-1]}{default}.")


def _check_configured_positions(
    recipe: Recipe, max_completion_length: int | None, section: str, given: bool = True
) -> None:
    """Refuse a completion longer than the generator's positions when its config says how many without
    loading anything: ``model.init_config``, or ``config.json`` of a local checkpoint (a GGUF file or a
    hub id is checked once the model has loaded: :func:`gan_rl.cli.models.check_position_limit`)."""
    if max_completion_length is None:
        return
    found = configured_position_limit(recipe)
    if found is None:
        return
    limit, source = found
    if max_completion_length >= limit:
        default = "" if given else " (the default)"
        raise RecipeError(
            f"{section}.max_completion_length: {max_completion_length} tokens{default} do not fit in the "
            f"generator's {limit} positions ({source}), which the prompt shares; set it below {limit}."
        )


def configured_position_limit(recipe: Recipe) -> tuple[int, str] | None:
    """(the generator's positions, where the recipe or its checkpoint says so), from the config alone:
    ``model.init_config``, or a local checkpoint's ``config.json``; None when that would take more
    (a GGUF file's metadata, a hub download) or the config does not say."""
    from gan_rl.utils.modeling import config_position_limit

    model = recipe.model
    if model.init_config is not None:
        found = config_position_limit(model.init_config)
        return (found[0], f"model.init_config.{found[1]}") if found else None
    if model.name_or_path is None or model.gguf_file is not None:
        return None
    path = recipe.resolve_path(model.name_or_path) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not a local checkpoint (a hub id), or not one we can read: later
        return None
    found = config_position_limit(config) if isinstance(config, dict) else None
    return (found[0], f"{found[1]} in {path}") if found else None


def _train_rows_bound(recipe: Recipe) -> tuple[int, str] | None:
    """The most rows the training split can have, when the recipe alone says so (a synthetic source's
    ``rows``, ``data.max_train_samples``): what ``gan-rl check`` knows before reading a file."""
    bounds = []
    if recipe.data.train.synthetic is not None:
        bounds.append((recipe.data.train.rows, "data.train.rows"))
    if recipe.data.max_train_samples is not None:
        bounds.append((recipe.data.max_train_samples, "data.max_train_samples"))
    return min(bounds) if bounds else None


def _check_rows_bound(recipe: Recipe, algorithm: str, config: Any) -> None:
    bound = _train_rows_bound(recipe)
    if bound is not None:
        check_train_rows(algorithm, config, bound[0], bound_by=bound[1])


def check_train_rows(algorithm: str, config: Any, rows: int, bound_by: str | None = None) -> None:
    """Refuse a training set too small for one batch, which would train nothing and report "completed".

    ``ppo``/``reinforce``: TRL's ``RepeatSampler`` draws ``generation_batch_size // num_generations``
    prompts per generation batch and drops an incomplete one, so fewer rows than that make no policy
    step at all. ``gumbel``, ``sft`` and ``spin`` take a smaller last batch (transformers' sampler), and are
    refused only with ``dataloader_drop_last: true`` (``spin``: counting its rows, not its pairs). ``bound_by``: the recipe field that caps the rows (before
    the data is read: a synthetic source's ``rows``, ``data.max_train_samples``); None: the rows read.
    """
    name = algorithm if algorithm in OWN_SECTION_COMMANDS else get_algorithm(algorithm).name
    section = name if name in OWN_SECTION_COMMANDS else "trainer"
    shown = f"{rows} row{'' if rows == 1 else 's'}"
    if bound_by is not None:
        shown = f"at most {shown} ({bound_by}: {rows})"
    if name in MIN_GENERATIONS:
        needed = config.generation_batch_size // config.num_generations
        if rows >= needed:
            return
        spread = [
            f"{value} {what}"
            for value, what in (
                (config.world_size, "processes"),
                (config.steps_per_generation, "steps_per_generation"),
            )
            if value != 1
        ]
        how = (
            f"{section}.per_device_train_batch_size {config.per_device_train_batch_size}"
            + "".join(f" x {s}" for s in spread)
            + f" / num_generations {config.num_generations}"
        )
        raise RecipeError(
            f"data.train: {shown}, fewer than the {needed} prompts of one generation batch ({how}); "
            f"TRL drops an incomplete batch, so no policy step would run: give data.train at least "
            f"{needed} rows, or lower {section}.per_device_train_batch_size."
        )
    if not getattr(config, "dataloader_drop_last", False):
        return
    per_prompt = getattr(config, "num_generations", 1)
    needed = config.per_device_train_batch_size // per_prompt * config.world_size
    if rows < needed:
        raise RecipeError(
            f"data.train: {shown}, fewer than one batch of {needed} prompts, which "
            f"{section}.dataloader_drop_last: true drops, so no step would run: give data.train at least "
            f"{needed} rows, lower {section}.per_device_train_batch_size, or drop dataloader_drop_last."
        )


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


def _instantiate(cls: type, kwargs: dict[str, Any], section_of: Callable[[str], str]) -> Any:
    """Build a TRL config, turning TRL's own validation errors into a RecipeError naming the section (and
    the field, for a config of ours that says which: :class:`gan_rl.errors.ConfigError`)."""
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        field = exc.detail.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0]
        raise RecipeError(f"{section_of(field)}.{exc.detail}") from None
    except (ValueError, TypeError) as exc:
        section = section_of("")
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


# Machine-wide settings an SFT (or SPIN) run takes from ``trainer`` unless ``sft:`` (``spin:``) sets them.
SHARED_WITH_SFT = ("seed", "bf16", "fp16", "use_cpu", "report_to", "gradient_checkpointing")
# The commands whose config is their own recipe section, not ``trainer`` (which lends them SHARED_WITH_SFT).
OWN_SECTION_COMMANDS = ("sft", "spin")


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
    config = _own_section_config(recipe, SFTConfig, "sft", kwargs, forced)
    _check_rows_bound(recipe, "sft", config)
    return config


def _own_section_config(recipe: Recipe, cls: type, section: str, kwargs: dict[str, Any], forced: dict) -> Any:
    """The end every config of a command with its own section (``sft:``, ``spin:``) shares: the model's
    gradient checkpointing, ``forced``, the bf16 default, values TRL or torch would refuse later, the backend
    request, then ``cls`` built; an error names ``trainer.<key>`` for a machine setting taken from
    ``trainer`` and ``<section>.<key>`` otherwise."""
    if recipe.model.gradient_checkpointing is not None:
        kwargs["gradient_checkpointing"] = recipe.model.gradient_checkpointing
    kwargs.update(forced)
    default_bf16(recipe, kwargs)
    own = getattr(recipe, section)

    def section_of(key: str) -> str:
        shared = key in SHARED_WITH_SFT and key not in own and key in recipe.trainer
        return "trainer" if shared else section

    _check_values(cls, kwargs, section_of)
    from gan_rl.cli.backends import check_backend_request

    check_backend_request(kwargs, section)
    return _instantiate(cls, kwargs, section_of)


def spin_output_dir(recipe: Recipe) -> str:
    """Where ``gan-rl spin`` writes: ``spin.output_dir``, else ``trainer.output_dir`` + ``-spin``."""
    if "output_dir" in recipe.spin:
        return str(recipe.spin["output_dir"])
    return str(recipe.trainer.get("output_dir", "outputs/gan-rl")).rstrip("/") + "-spin"


def check_spin_model(recipe: Recipe) -> None:
    """Refuse a quantized generator for ``gan-rl spin`` (``gan-rl check --algorithm spin`` too), as
    :class:`gan_rl.trainer.spin.SpinTrainer` does: its final policy merges the adapter into the weights."""
    if recipe.model.quantization is not None:
        raise RecipeError(
            "model.quantization: gan-rl spin does not train a quantized generator (its final policy merges "
            "the LoRA adapter into the weights); drop model.quantization."
        )


def build_spin_config(recipe: Recipe, **forced: Any) -> Any:
    """gan_rl's ``SpinConfig`` (TRL's ``DPOConfig`` plus SPIN's fields) from the ``spin:`` section, with the
    machine settings of ``trainer`` (as SFT takes them), checked as the other configs are: an unknown key
    with the closest spelling, values TRL or torch would refuse later, SpinConfig's own checks, a
    completion longer than the generator's positions, all as one line naming ``spin.<field>``.
    """
    from gan_rl.trainer.spin import SpinConfig

    own_fields = {f.name for f in dataclasses.fields(SpinConfig) if f.init}
    hints = typing.get_type_hints(SpinConfig)
    kwargs: dict[str, Any] = {k: recipe.trainer[k] for k in SHARED_WITH_SFT if k in recipe.trainer}
    for key, value in recipe.spin.items():
        if key not in own_fields:
            err = unknown_key_error(key, sorted(own_fields), "spin")
            raise RecipeError(f"{err} (spin holds SpinConfig fields: TRL's DPOConfig and SPIN's own.)")
        if key == "loss_type" and isinstance(value, str):  # one loss, as TRL's own docs write it
            value = [value]
        kwargs[key] = _coerce_trl(value, hints.get(key, Any), f"spin.{key}")
    kwargs["output_dir"] = spin_output_dir(recipe)
    config = _own_section_config(recipe, SpinConfig, "spin", kwargs, forced)
    given = "max_completion_length" in recipe.spin
    _check_configured_positions(recipe, config.max_completion_length, "spin", given)
    _check_rows_bound(recipe, "spin", config)
    return config
