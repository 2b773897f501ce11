"""Recipes: one YAML file describes a run, validated strictly before any model is loaded.

Our own sections (``model``, ``data``, ``discriminator``) are dataclasses checked field by field: an
unknown key, a wrong type or a bad choice is one :class:`RecipeError` naming the field. The ``trainer``
section is TRL's own ``GRPOConfig`` (``ppo``) or ``RLOOConfig`` (``reinforce``) fields, handed over as is
so TRL's validation applies; ``ppo:``, ``reinforce:`` and ``gumbel:`` hold fields for one algorithm only
(``gumbel`` builds gan_rl's own :class:`gan_rl.gumbel.GumbelConfig`, a ``TrainingArguments`` subclass).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from gan_rl.algorithms import ALGORITHMS, get_algorithm
from gan_rl.discriminator_config import DiscriminatorConfig
from gan_rl.hardware import Precision, log_precision, resolve_precision
from gan_rl.lora import LoraSettings


class RecipeError(ValueError):
    """A recipe (or its data) is wrong; the message names the field and what would be valid."""


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


@dataclass
class QuantizationSettings:
    """bitsandbytes quantization of the frozen base weights (QLoRA when combined with ``lora``)."""

    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"


@dataclass
class ModelSettings:
    """The generator: a checkpoint (hub id or local path), or a fresh model built from a config."""

    name_or_path: str | None = None
    # A GGUF file inside ``name_or_path`` (a folder or hub repo): model and tokenizer come from it,
    # dequantized once per run into an ordinary checkpoint (``OUTPUT_DIR/initial-model``).
    gguf_file: str | None = None
    # Build a new, randomly initialised model from these transformers config fields (needs ``model_type``).
    init_config: dict[str, Any] | None = None
    init_seed: int = 0
    # Tokenizer checkpoint; defaults to ``name_or_path``.
    tokenizer: str | None = None
    # Build a word-level tokenizer from the training data (for ``init_config`` models without a tokenizer).
    word_tokenizer_from_data: bool = False
    # ``auto``: bfloat16 where the hardware runs it natively (a CUDA device with bf16; a CPU with
    # avx512_bf16 / amx_bf16), float32 elsewhere and for full fine-tuning (gan_rl.hardware); it also decides
    # trainer.bf16 / sft.bf16 when they are unset. run_summary.json records the choice (``dtype``,
    # ``dtype_reason``).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    lora: LoraSettings | None = None
    quantization: QuantizationSettings | None = None
    # Forwarded to the trainer's ``gradient_checkpointing`` (TRL's default: on); also used by QLoRA.
    gradient_checkpointing: bool | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    # ``sft``: ``ppo``/``reinforce`` start from the result of ``gan-rl sft`` on the same recipe (run first
    # when it is not there yet), which is then also the KL reference and the head's frozen encoder.
    warm_start: Literal["none", "sft"] = "none"


@dataclass
class DataSource:
    """Where a split comes from: a local file, a hub dataset, or a dataset gan-rl generates."""

    path: str | None = None
    hub: str | None = None
    split: str = "train"
    config: str | None = None
    synthetic: Literal["quickstart", "polarity-positive", "polarity-negative", "polarity-mixed"] | None = None
    rows: int = 512
    seed: int = 0


@dataclass
class DataSettings:
    """Prompt/response data; ``prompt_column`` -> ``response_column`` is the real distribution."""

    train: DataSource = field(default_factory=DataSource)
    test: DataSource | None = None
    prompt_column: str = "prompt"
    response_column: str = "response"
    system_prompt: str | None = None
    # ``auto``: the chat template when the tokenizer has one, plain text otherwise.
    format: Literal["auto", "chat", "plain"] = "auto"
    # Plain format only: how a prompt is turned into the generator's input text.
    prompt_template: str = "{prompt}\n"
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    # Held-out real pairs for model selection (``gan-rl sft``'s validation NLL and early stopping), apart
    # from ``test``, which only ``gan-rl evaluate`` reads: a source of its own, or a fraction of the train
    # source carved off with the recipe's seed (``trainer.seed``) before ``max_train_samples`` applies.
    validation: DataSource | None = None
    validation_fraction: float | None = None
    max_validation_samples: int | None = None

    def validate(self) -> None:
        for name in ("max_train_samples", "max_test_samples", "max_validation_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}: expected a positive number of rows, got {value}.")
        if self.validation_fraction is not None:
            if not 0 < self.validation_fraction < 1:
                raise ValueError(
                    f"validation_fraction: expected a fraction in (0, 1), got {self.validation_fraction}."
                )
            if self.validation is not None:
                raise ValueError(
                    "validation_fraction: give either 'validation' (a source) or 'validation_fraction' "
                    "(carved from train), not both."
                )
        try:
            filled = self.prompt_template.format(prompt="\x00")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"prompt_template: {self.prompt_template!r} is not a valid template ({exc!r}); "
                "use '{prompt}' for the prompt and '{{' / '}}' for literal braces."
            ) from None
        if "\x00" not in filled:
            raise ValueError(f"prompt_template: {self.prompt_template!r} does not contain '{{prompt}}'.")


@dataclass
class SFTLossSettings:
    """InstructGPT's pretraining mix for the policy: ``coef`` x the NLL of real (prompt, response) pairs
    added to the policy-gradient loss, so the text stays close to the real data while the reward rises."""

    coef: float = 0.0
    batch_size: int = 8
    max_length: int = 256

    def validate(self) -> None:
        if self.coef < 0:
            raise ValueError(f"coef: expected 0 (off) or a positive weight, got {self.coef}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected a positive number, got {self.batch_size}.")
        if self.max_length < 8:
            raise ValueError(f"max_length: expected at least 8, got {self.max_length}.")


@dataclass
class ContrastSettings:
    """Real data of another side (e.g. TWON left when training on right) for the domain judge."""

    train: DataSource = field(default_factory=DataSource)
    test: DataSource | None = None


@dataclass
class EvaluateSettings:
    """``gan-rl generate`` / ``gan-rl evaluate``: held-out sampling and the metrics no training sees."""

    # Sentence-embedding encoder for the Fréchet distance, the two-sample test and the domain judge.
    encoder: str = "sentence-transformers/all-MiniLM-L6-v2"
    max_samples: int = 500
    max_new_tokens: int = 64
    temperature: float = 1.0
    # Several sampling temperatures in one evaluation (a quality-diversity curve per model); replaces
    # ``temperature`` when given.
    temperatures: list[float] | None = None
    top_p: float = 1.0
    batch_size: int = 32
    folds: int = 5
    # Shuffling (which held-out prompts), sampling and the classifiers' folds.
    seed: int = 0
    # The sampling seed alone, when set: other draws of the same model on the same prompts (its spread).
    sampling_seed: int | None = None
    contrast: ContrastSettings | None = None
    # Real training responses per side the domain judge learns from (the whole target training source,
    # not capped by data.max_train_samples): its accuracy grows with rows (TWON: 0.69 from 1,200, 0.79 from
    # 14,250 per side).
    judge_samples: int = 20000
    # For ``encoder`` only (not inherited from ``model.trust_remote_code``): run that checkpoint's own code.
    trust_remote_code: bool = False
    # MAUVE (Pillutla et al., 2021) on the ``encoder``'s embeddings, with the mauve-text package (the
    # ``eval`` extra); false skips it.
    mauve: bool = True

    @property
    def sampling_temperatures(self) -> list[float]:
        """The temperatures every model is sampled at: ``temperatures``, else ``[temperature]``."""
        return list(self.temperatures) if self.temperatures else [self.temperature]

    def validate(self) -> None:
        if self.temperatures is not None:
            if not self.temperatures:
                raise ValueError("temperatures: expected a non-empty list of positive numbers, got [].")
            bad = [t for t in self.temperatures if not t > 0]
            if bad:
                raise ValueError(f"temperatures: expected positive numbers, got {bad[0]!r}.")
            if len(set(self.temperatures)) != len(self.temperatures):
                raise ValueError(f"temperatures: each temperature once, got {self.temperatures}.")
        checks = [
            ("max_samples", self.max_samples >= 10, "at least 10"),
            ("judge_samples", self.judge_samples >= 2, "at least 2"),
            ("max_new_tokens", self.max_new_tokens >= 1, "positive"),
            ("temperature", self.temperature > 0, "positive"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("batch_size", self.batch_size >= 1, "positive"),
            ("folds", self.folds >= 2, "at least 2"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}.")


@dataclass
class Recipe:
    """A whole run. ``trainer`` is shared by every algorithm; ``ppo``/``reinforce``/``gumbel`` override it."""

    model: ModelSettings
    data: DataSettings
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    ppo: dict[str, Any] = field(default_factory=dict)
    reinforce: dict[str, Any] = field(default_factory=dict)
    gumbel: dict[str, Any] = field(default_factory=dict)
    # TRL SFTConfig fields for ``gan-rl sft`` (and the warm start).
    sft: dict[str, Any] = field(default_factory=dict)
    sft_loss: SFTLossSettings = field(default_factory=SFTLossSettings)
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    # Directory of the recipe file: relative input paths resolve against it.
    base_dir: Path = field(default=Path("."), metadata={"internal": True})

    def resolve_path(self, path: str) -> Path:
        """An input path from the recipe, relative to the recipe file unless absolute."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data (what ``recipe.yaml`` in the output directory holds)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("internal"):
                continue
            value = getattr(self, f.name)
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return out

    def trainer_args(self, algorithm: str) -> dict[str, Any]:
        """The TRL config fields for ``algorithm``: ``trainer`` merged with its own section."""
        return {**self.trainer, **getattr(self, algorithm)}


# --------------------------------------------------------------------------------------------------
# Strict parsing
# --------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(tp, "__name__", str(tp))


def unknown_key_error(key: str, valid: list[str], where: str) -> RecipeError:
    """The error for a key that is not a field, with the closest valid spelling."""
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    shown = ", ".join(sorted(valid)) if len(valid) <= 40 else f"{len(valid)} fields, see the docs"
    return RecipeError(f"{where}: unknown key '{key}'.{hint} Valid keys: {shown}.")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (converting where YAML is ambiguous), or raise."""
    if tp is Any or tp is typing.Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except RecipeError as exc:
                errors.append(exc)
        raise RecipeError(f"{where}: expected {_type_name(tp)}, got {value!r}.")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        raise RecipeError(
            f"{where}: {value!r} is not a valid choice; valid: {', '.join(repr(c) for c in choices)}."
        )
    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        return parse_section(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {value!r}.")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}.")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{where}: expected true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise RecipeError(f"{where}: expected an integer, got {value!r}.")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise RecipeError(f"{where}: expected a number, got {value!r}.")
    if tp is str:
        if isinstance(value, str):
            return value
        raise RecipeError(f"{where}: expected a string, got {value!r}.")
    if tp is Path:
        return Path(value)
    return value  # types we do not check (left to the library that owns the field)


def _hints(cls: type) -> dict[str, Any]:
    import gan_rl.discriminator_config as dc

    return typing.get_type_hints(cls, globalns={**globals(), **vars(dc)})


def parse_section(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if raw is None:
        raw = {}
    if cls is DataSource and isinstance(raw, str):
        raw = {"path": raw}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping, got {raw!r}.")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise unknown_key_error(str(key), list(fields), where)
        kwargs[key] = coerce(value, hints[key], f"{where}.{key}")
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        missing = [n for n, f in fields.items() if n not in kwargs and _is_required(f)]
        raise RecipeError(f"{where}: missing required key(s): {', '.join(missing)}.") from exc
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as exc:
            raise RecipeError(f"{where}.{exc}") from None
    return obj


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check_model(model: ModelSettings) -> None:
    if model.gguf_file is not None:
        if model.name_or_path is None:
            raise RecipeError(
                "model.gguf_file: names a file inside 'name_or_path' (a folder or hub repo); set name_or_path."
            )
        if "/" in model.gguf_file or "\\" in model.gguf_file or not model.gguf_file.endswith(".gguf"):
            raise RecipeError(
                f"model.gguf_file: expected the name of a .gguf file inside name_or_path, got {model.gguf_file!r}."
            )
    if (model.name_or_path is None) == (model.init_config is None):
        raise RecipeError("model: give exactly one of 'name_or_path' (a checkpoint) or 'init_config'.")
    if model.init_config is not None:
        if "model_type" not in model.init_config:
            raise RecipeError("model.init_config: needs 'model_type' (for example 'llama' or 'qwen2').")
        if model.tokenizer is None and not model.word_tokenizer_from_data:
            raise RecipeError(
                "model.tokenizer: a model built from 'init_config' needs a tokenizer checkpoint, "
                "or 'word_tokenizer_from_data: true'."
            )
    if model.word_tokenizer_from_data and model.tokenizer is not None:
        raise RecipeError("model: 'tokenizer' and 'word_tokenizer_from_data' exclude each other.")
    if model.word_tokenizer_from_data and model.name_or_path is not None:
        raise RecipeError(
            "model.word_tokenizer_from_data: only for a model built from 'init_config'; a checkpoint "
            "('name_or_path') brings its own tokenizer."
        )
    if model.quantization is not None and model.lora is None:
        raise RecipeError(
            "model.quantization: quantized weights cannot be trained directly; add a 'lora' section (QLoRA)."
        )


def _check_source(src: DataSource, where: str) -> None:
    given = [k for k in ("path", "hub", "synthetic") if getattr(src, k) is not None]
    if len(given) != 1:
        raise RecipeError(
            f"{where}: give exactly one of 'path', 'hub' or 'synthetic' (got {given or 'none'})."
        )


def parse_recipe(raw: Any, base_dir: Path | str = ".") -> Recipe:
    """Validate a recipe mapping (as loaded from YAML) into a :class:`Recipe`."""
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe: expected a mapping of sections, got {type(raw).__name__}.")
    sections = [f.name for f in dataclasses.fields(Recipe) if not f.metadata.get("internal")]
    for key in raw:
        if key not in sections:
            raise unknown_key_error(str(key), sections, "recipe")
    for required in ("model", "data"):
        if raw.get(required) is None:
            raise RecipeError(f"recipe: missing required section '{required}'.")
    recipe = Recipe(
        model=parse_section(ModelSettings, raw["model"], "model"),
        data=parse_section(DataSettings, raw["data"], "data"),
        discriminator=parse_section(DiscriminatorConfig, raw.get("discriminator"), "discriminator"),
        trainer=coerce(raw.get("trainer") or {}, dict, "trainer"),
        ppo=coerce(raw.get("ppo") or {}, dict, "ppo"),
        reinforce=coerce(raw.get("reinforce") or {}, dict, "reinforce"),
        gumbel=coerce(raw.get("gumbel") or {}, dict, "gumbel"),
        sft=coerce(raw.get("sft") or {}, dict, "sft"),
        sft_loss=parse_section(SFTLossSettings, raw.get("sft_loss"), "sft_loss"),
        evaluate=parse_section(EvaluateSettings, raw.get("evaluate"), "evaluate"),
        base_dir=Path(base_dir).resolve(),
    )
    _check_model(recipe.model)
    _check_source(recipe.data.train, "data.train")
    if recipe.data.test is not None:
        _check_source(recipe.data.test, "data.test")
    if recipe.data.validation is not None:
        _check_source(recipe.data.validation, "data.validation")
    if recipe.discriminator.kind == "adapter" and recipe.model.lora is None:
        raise RecipeError(
            "discriminator.kind: 'adapter' adds a LoRA adapter beside the generator's own, on its base "
            "weights; add model.lora (or use kind 'head')."
        )
    contrast = recipe.evaluate.contrast
    if contrast is not None:
        _check_source(contrast.train, "evaluate.contrast.train")
        if contrast.test is not None:
            _check_source(contrast.test, "evaluate.contrast.test")
    return recipe


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 booleans: only true/false.

    YAML 1.1 also reads yes/no/on/off as booleans, which would turn TRL's ``save_strategy: no`` and
    ``--set trainer.eval_strategy=no`` into False.
    """


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """Parse recipe YAML (safe: plain data only)."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass


DATA_SOURCE_KEYS = (
    ["data", "train"],
    ["data", "test"],
    ["data", "validation"],
    ["evaluate", "contrast", "train"],
    ["evaluate", "contrast", "test"],
)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a raw recipe mapping."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE, for example trainer.max_steps=10.")
        dotted, text = item.split("=", 1)
        keys = [k for k in dotted.strip().split(".") if k]
        if not keys:
            raise RecipeError(f"--set {item!r}: empty key.")
        try:
            value = load_yaml(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise RecipeError(f"--set {item!r}: value is not valid YAML ({exc}).") from None
        node = raw
        for i, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if isinstance(child, str) and keys[: i + 1] in DATA_SOURCE_KEYS:
                child = node[key] = {"path": child}
            if not isinstance(child, dict):
                raise RecipeError(f"--set {item!r}: '{'.'.join(keys[: i + 1])}' is not a section.")
            node = child
        node[keys[-1]] = value
    return raw


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe: file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(
            f"recipe {path}: not a text file (byte {exc.start} is not UTF-8); a recipe is a YAML file."
        ) from None
    except OSError as exc:
        raise RecipeError(f"recipe {path}: cannot read it: {exc.strerror or exc}.") from None
    try:
        raw = load_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path}: expected a mapping of sections at the top level.")
    raw = apply_overrides(raw, overrides or [])
    return parse_recipe(raw, base_dir=path.resolve().parent)


# --------------------------------------------------------------------------------------------------
# The trainer section: TRL's own config classes
# --------------------------------------------------------------------------------------------------


def build_trainer_config(recipe: Recipe, algorithm: str, **forced: Any) -> Any:
    """Build TRL's config for ``algorithm`` from the recipe, turning TRL's complaints into RecipeErrors.

    A ``trainer`` field that only another algorithm's config has is an error that says where it belongs,
    so that one recipe serves every algorithm. A ``trainer`` field that *every* other algorithm's config has
    (e.g. ``num_iterations``, shared by ``ppo`` and ``reinforce``, meaningless to ``gumbel``) is a setting of
    the other family: it is left out for this algorithm, and logged.
    """
    cls = get_algorithm(algorithm).config_class()
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
    from gan_rl.backends import check_backend_request  # imports this module: import on use

    check_backend_request(kwargs, "trainer")  # building the config starts the processes: check first
    return _instantiate(cls, kwargs, "trainer")


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
    from gan_rl.backends import check_backend_request  # imports this module: import on use

    check_backend_request(kwargs, "sft")
    return _instantiate(SFTConfig, kwargs, "sft")
