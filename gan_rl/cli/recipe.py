"""Recipes: one YAML file describes a run, validated strictly before any model is loaded.

Our own sections (``model``, ``data``, ``discriminator``) are dataclasses that pydantic validates: an
unknown key, a wrong type or a bad choice is one :class:`RecipeError` naming the field. The rules are
:mod:`gan_rl.utils.fields`', the same ones the sections (:class:`CheckedConfig`) and the Python configs run
when they are built, so a section built in Python is refused as its recipe would be. The ``trainer``
section is TRL's own ``GRPOConfig`` (``ppo``) or ``RLOOConfig`` (``reinforce``) fields, handed over as is
so TRL's validation applies; ``ppo:``, ``reinforce:`` and ``gumbel:`` hold fields for one algorithm only
(``gumbel`` builds gan_rl's own :class:`gan_rl.gumbel.config.GumbelConfig`, a ``TrainingArguments`` subclass).
``sft:`` and ``spin:`` are the whole config of their command (TRL's ``SFTConfig``, gan_rl's ``SpinConfig``),
built when the command runs; ``sample_selection:`` is :class:`gan_rl.eval.selection_config.SampleSelectionConfig`,
checked here like our own sections.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gan_rl.cli.downloads import is_url
from gan_rl.discriminator.config import DiscriminatorConfig
from gan_rl.errors import RecipeError
from gan_rl.eval.selection_config import SampleSelectionConfig
from gan_rl.utils.fields import CheckedConfig, FieldError, check_value, unknown_key_message
from gan_rl.utils.lora import LoraSettings

# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


@dataclass
class QuantizationSettings(CheckedConfig):
    """bitsandbytes quantization of the frozen base weights (QLoRA when combined with ``lora``)."""

    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    # ``auto``: bfloat16 on a GPU that computes it natively (Ampere and later), float16 on one that would
    # emulate it (a T4 or V100), as ``model.dtype: auto`` chooses.
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"


@dataclass
class ModelSettings(CheckedConfig):
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
    # avx512_bf16 / amx_bf16), float32 elsewhere and for full fine-tuning (gan_rl.utils.hardware); it also decides
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
    # The warm start's own training data (a source, as ``data.train`` is), when it should differ from the
    # adversarial run's: e.g. SFT on mixed data, then the adversarial run on one side of it. None: data.train.
    warm_start_data: DataSource | None = None


@dataclass
class DataSource(CheckedConfig):
    """Where a split comes from: a local file, a file on the web, a hub dataset, or a dataset gan-rl
    generates.

    ``path`` is a local file (relative to the recipe) or an http(s) URL; ``url`` is where the file is
    published, downloaded once into gan-rl's cache (:mod:`gan_rl.cli.downloads`) when ``path`` is not given
    or names no file: a recipe can name both, so a local copy wins and a fresh machine still runs it.
    ``sha256``: the published file's checksum; a download (or cached copy) with other bytes is refused.
    """

    path: str | None = None
    url: str | None = None
    hub: str | None = None
    split: str = "train"
    config: str | None = None
    synthetic: Literal["quickstart", "polarity-positive", "polarity-negative", "polarity-mixed"] | None = None
    rows: int = 512
    seed: int = 0
    sha256: str | None = None

    @classmethod
    def from_file_value(cls, value: Any) -> Any:
        """A recipe may name a file source by its path alone (``train: data.csv``)."""
        return {"path": value} if isinstance(value, str) else value

    def validate(self) -> None:
        super().validate()
        if self.url is not None and not is_url(self.url):
            raise ValueError(f"url: expected an http:// or https:// URL, got {self.url!r}.")
        if self.sha256 is not None:
            if re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256) is None:
                raise ValueError(
                    f"sha256: expected 64 hexadecimal digits (sha256sum's output), got {self.sha256!r}."
                )
            if self.url is None and not (self.path is not None and is_url(self.path)):
                raise ValueError(
                    "sha256: the checksum of the file downloaded from 'url'; this source names no URL (a local "
                    "file is read as it is)."
                )


@dataclass
class DataSettings(CheckedConfig):
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

    @property
    def has_validation(self) -> bool:
        """Whether the recipe has a validation split (a source of its own, or carved from train)."""
        return self.validation is not None or self.validation_fraction is not None

    def validate(self) -> None:
        super().validate()
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
class SFTLossSettings(CheckedConfig):
    """InstructGPT's pretraining mix for the policy: ``coef`` x the NLL of real (prompt, response) pairs
    added to the policy-gradient loss, so the text stays close to the real data while the reward rises."""

    coef: float = 0.0
    batch_size: int = 8
    max_length: int = 256

    def validate(self) -> None:
        super().validate()
        if self.coef < 0:
            raise ValueError(f"coef: expected 0 (off) or a positive weight, got {self.coef}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: expected a positive number, got {self.batch_size}.")
        if self.max_length < 8:
            raise ValueError(f"max_length: expected at least 8, got {self.max_length}.")


@dataclass
class ContrastSettings(CheckedConfig):
    """Real data of another side (e.g. TWON left when training on right) for the domain judge."""

    train: DataSource = field(default_factory=DataSource)
    test: DataSource | None = None


@dataclass
class EvaluateSettings(CheckedConfig):
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
        super().validate()
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
    # gan_rl's SpinConfig fields (TRL's DPOConfig and SPIN's own) for ``gan-rl spin``.
    spin: dict[str, Any] = field(default_factory=dict)
    # Selection by samples for every training command (None: off): the checkpoint whose samples of fixed
    # validation prompts are hardest to tell from the real responses is kept in best-by-samples/.
    sample_selection: SampleSelectionConfig | None = None
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


def unknown_key_error(key: str, valid: list[str], where: str) -> RecipeError:
    """The error for a key that is not a field, with the closest valid spelling."""
    return RecipeError(unknown_key_message(key, valid, where))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` validated against the annotation ``tp`` as a value read from the recipe file (pydantic,
    with :mod:`gan_rl.utils.fields`' rules: ``1e-4``, which YAML reads as a string, is a number), or a
    :class:`RecipeError` naming ``where``. A section (a config dataclass) is built with its fields checked
    and its own rules run, an error in it named by its place (``discriminator.reward.form``)."""
    try:
        return check_value(value, tp, where, from_file=True)
    except FieldError as exc:
        raise RecipeError(str(exc)) from None


def parse_section(cls: type, raw: Any, where: str) -> Any:
    """Build the section ``cls`` from the recipe's mapping (empty: its defaults), rejecting unknown keys (with
    the closest spelling), wrong types and the values the class itself refuses, as a RecipeError naming the
    field under ``where``."""
    return coerce(raw, cls, where)


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
    if model.warm_start_data is not None:
        if model.warm_start != "sft":
            raise RecipeError(
                "model.warm_start_data: the data of the SFT warm start; set 'warm_start: sft' as well, "
                "or drop it."
            )
        _check_source(model.warm_start_data, "model.warm_start_data")


def _check_source(src: DataSource, where: str) -> None:
    """One kind of source: a file (``path`` and / or ``url``), ``hub`` or ``synthetic``."""
    given = [k for k in ("path", "url", "hub", "synthetic") if getattr(src, k) is not None]
    kinds = {"url": "path"}  # path + url: one file, its local copy and where it is published
    if len({kinds.get(k, k) for k in given}) != 1:
        raise RecipeError(
            f"{where}: give exactly one of 'path' (and / or 'url'), 'hub' or 'synthetic' (got {given or 'none'})."
        )
    if src.path is not None and src.url is not None and is_url(src.path):
        raise RecipeError(f"{where}.path: a URL, and 'url' is given too; give the local file as 'path'.")


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
        spin=coerce(raw.get("spin") or {}, dict, "spin"),
        # Absent (or empty: ``sample_selection:`` with nothing under it) is off; a mapping, {} included, on.
        sample_selection=None
        if raw.get("sample_selection") is None
        else parse_section(SampleSelectionConfig, raw["sample_selection"], "sample_selection"),
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
    if recipe.sample_selection is not None and not recipe.data.has_validation:
        raise RecipeError(
            "sample_selection: needs data.validation or data.validation_fraction (its prompts and real "
            "responses; never data.test, which evaluate reports)."
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


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (PyYAML's own message spans several lines, with
    a drawing of the place, which would not be the one line an error is)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem is None:
        return " ".join(str(exc).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(exc, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")


DATA_SOURCE_KEYS = (
    ["model", "warm_start_data"],
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
            raise RecipeError(f"--set {item!r}: value is not valid YAML ({yaml_problem(exc)}).") from None
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
        raise RecipeError(f"recipe {path}: not valid YAML: {yaml_problem(exc)}.") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path}: expected a mapping of sections at the top level.")
    raw = apply_overrides(raw, overrides or [])
    return parse_recipe(raw, base_dir=path.resolve().parent)


# --------------------------------------------------------------------------------------------------
# The trainer section: TRL's own config classes
# --------------------------------------------------------------------------------------------------
