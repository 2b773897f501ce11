"""Held-out evaluation: ``gan-rl generate`` and ``gan-rl evaluate``.

Every generator (base, SFT, GAN-trained) answers the same held-out prompts with the same sampling
settings (``evaluate.temperatures``: once per temperature). What is recipe-specific lives here: the
held-out split and the domain judge's sources from the recipe, sampling a model, the JSONL files of
``gan-rl generate``, the ``--model`` specs. The metrics and the report are
:func:`gan_rl.eval.evaluation.evaluate_texts` and :func:`gan_rl.eval.report.save_evaluation`, which work on
plain lists of texts from Python too.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from gan_rl.cli.data import format_prompt, load_raw_splits, load_source, uses_chat_format
from gan_rl.cli.models import check_weights_readable, load_for_generation, resolve_checkpoint
from gan_rl.cli.outputs import check_writable_dir, check_writable_file
from gan_rl.cli.recipe import EvaluateSettings, Recipe
from gan_rl.errors import RecipeError
from gan_rl.eval.evaluation import REAL_LABEL, EvaluationConfig, evaluate_texts
from gan_rl.eval.metrics import TextEncoder, mauve_available
from gan_rl.eval.report import save_evaluation
from gan_rl.utils.generation import sample_completions

# What ``gan-rl evaluate`` imports beyond the training path (module -> package): the ``eval`` extra.
EVAL_PACKAGES = {"sklearn": "scikit-learn", "scipy": "scipy", "matplotlib": "matplotlib"}
# A JSON value that is not text, as the message calls it.
JSON_KINDS = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}
# What to do about a generator directory whose weights cannot be read.
MODEL_TODO = "save or copy the model again, or point --model at another one"


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def held_out(recipe: Recipe) -> tuple[list[str], list[str], list[str]]:
    """(test prompts, test real responses, training responses), shuffled with ``evaluate.seed``; at most
    ``evaluate.max_samples`` test rows. The first training responses (as many as test rows) are the
    reference row, "as real as the data"; the domain judge trains on more of them."""
    if recipe.data.test is None:
        raise RecipeError("data.test: evaluation needs a held-out split; add a 'test' source to 'data'.")
    raw = load_raw_splits(recipe)
    settings, data = recipe.evaluate, recipe.data
    test = raw["test"].shuffle(seed=settings.seed).select(range(min(settings.max_samples, len(raw["test"]))))
    train = raw["train"].shuffle(seed=settings.seed)
    needed = max(settings.folds, 2)  # the two-sample test's folds need that many rows of each side
    if len(test) < needed or len(train) < len(test):
        raise RecipeError(
            f"data.test: evaluation needs at least {needed} held-out rows (evaluate.folds) and at least as "
            f"many training rows; got {len(test)} test and {len(train)} training rows."
        )
    return list(test[data.prompt_column]), list(test[data.response_column]), list(train[data.response_column])


def sample_responses(
    model: Any,
    tokenizer: Any,
    recipe: Recipe,
    prompts: list[str],
    settings: EvaluateSettings,
    temperature: float | None = None,
) -> list[str]:
    """One sampled response per prompt, with the prompt formatted as in training (chat or plain), at
    ``temperature`` (default ``settings.temperature``); the same seed (``sampling_seed``, else ``seed``)
    at every temperature."""
    chat = uses_chat_format(recipe.data, tokenizer)
    template_kwargs = recipe.trainer.get("chat_template_kwargs") or {}  # as in training
    torch.manual_seed(settings.seed if settings.sampling_seed is None else settings.sampling_seed)
    sampling = {
        "do_sample": True,
        "temperature": settings.temperature if temperature is None else temperature,
        "top_p": settings.top_p,
        "max_new_tokens": settings.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
    }
    formatted = [format_prompt(p, recipe.data, chat) for p in prompts]
    completions = sample_completions(
        model, tokenizer, formatted, settings.batch_size, sampling, template_kwargs
    )
    return [text.strip() for text, _ in completions]


Generations = dict[float, list[str]]  # temperature -> one response per held-out prompt


def write_jsonl(path: Path, prompts: list[str], reals: list[str], generated: Generations) -> Path:
    """One row per (temperature, prompt): ``prompt``, ``real``, ``generated``, ``temperature``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")  # a complete file or none: written aside, then renamed
    with tmp.open("w") as f:
        for temperature, texts in generated.items():
            for p, r, g in zip(prompts, reals, texts, strict=True):
                row = {"prompt": p, "real": r, "generated": g, "temperature": temperature}
                f.write(json.dumps(row) + "\n")
    tmp.replace(path)
    return path


def jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a file from ``gan-rl generate``, each a JSON object whose ``prompt`` and ``generated``
    are text; one :class:`RecipeError` naming the file, the line and the column otherwise (a null read as
    text would be scored as the response "None")."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecipeError(f"--model {path}: line {number} is not JSON ({exc.msg}).") from None
        if not isinstance(row, dict) or "prompt" not in row or "generated" not in row:
            raise RecipeError(
                f"--model {path}: line {number} lacks 'prompt' and 'generated' (write it with gan-rl generate)."
            )
        for column in ("prompt", "generated"):
            value = row[column]
            if not isinstance(value, str):
                what = "null" if value is None else f"{JSON_KINDS[type(value)]} ({json.dumps(value)[:40]})"
                raise RecipeError(
                    f"--model {path}: line {number}, column '{column}' is {what}, not text; every row needs "
                    "the text of a response (write the file again with gan-rl generate)."
                )
        rows.append(row)
    return rows


def read_jsonl(path: Path, prompts: list[str], temperatures: list[float]) -> Generations:
    """Responses written by ``gan-rl generate`` at each of ``temperatures``; they must answer the same
    held-out prompts. A file from before temperatures were recorded counts as sampled at the one
    temperature asked for."""
    rows = jsonl_rows(path)
    groups: dict[float | None, list[dict]] = {}
    for row in rows:
        groups.setdefault(row.get("temperature"), []).append(row)
    out: Generations = {}
    for temperature in temperatures:
        group = groups.get(temperature)
        if group is None and set(groups) == {None} and len(temperatures) == 1:
            group = groups[None]
        if group is None:
            have = ", ".join(f"{t:g}" for t in groups if t is not None) or "none recorded"
            raise RecipeError(
                f"--model {path}: no generations at temperature {temperature:g} (it has: {have}); "
                f"generate them with --temperature {','.join(f'{t:g}' for t in temperatures)}."
            )
        if [r["prompt"] for r in group[: len(prompts)]] != prompts:
            raise RecipeError(
                f"--model {path}: its prompts are not this recipe's held-out prompts (same data.test, "
                "evaluate.max_samples and evaluate.seed are needed); generate it again."
            )
        out[temperature] = [r["generated"] for r in group[: len(prompts)]]
    return out


def generations_for(recipe: Recipe, source: str, prompts: list[str]) -> Generations:
    """Responses of a generator (a directory or a ``.gguf`` file, sampled now, once per temperature of
    ``evaluate``) or of a JSONL file from ``gan-rl generate``."""
    path = Path(source)
    temperatures = recipe.evaluate.sampling_temperatures
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise RecipeError(f"--model: no such file: {path}")
        return read_jsonl(path, prompts, temperatures)
    model, tokenizer = load_for_generation(
        path, _device(), recipe.model.trust_remote_code, dtype=recipe.model.dtype
    )
    try:
        return {
            t: sample_responses(model, tokenizer, recipe, prompts, recipe.evaluate, temperature=t)
            for t in temperatures
        }
    finally:
        del model
        gc.collect()


def generate(recipe: Recipe, model_path: str, output: str | Path | None = None) -> Path:
    """``gan-rl generate``: sample the held-out prompts with ``model_path`` into a JSONL file (at every
    temperature of ``evaluate``)."""
    if Path(model_path).suffix == ".jsonl":
        raise RecipeError(
            f"--model {model_path}: 'generate' samples from a generator directory, not a JSONL file."
        )
    if output is None and Path(model_path).suffix == ".gguf":
        raise RecipeError(f"--model {model_path}: a .gguf file has no output directory; give --output FILE.")
    output = Path(output) if output else Path(model_path) / "generations.jsonl"
    check_writable_file(output, "--output")
    prompts, reals, _ = held_out(recipe)
    generated = generations_for(recipe, model_path, prompts)
    return write_jsonl(output, prompts, reals, generated)


def parse_models(specs: list[str]) -> dict[str, str]:
    """``--model [LABEL=]PATH`` options as {label: path}; labels default to the directory name."""
    models: dict[str, str] = {}
    for spec in specs:
        # A path may itself hold '=' (lr=1e-3): an existing path is taken whole, else LABEL=PATH.
        label, _, path = ("", "", spec) if Path(spec).exists() or "=" not in spec else spec.partition("=")
        label = label or Path(path.rstrip("/")).name.removesuffix(".jsonl").removesuffix(".gguf") or path
        if "/" in label or label.startswith(".") or not label:
            raise RecipeError(f"--model {spec!r}: label {label!r} must be a plain name (it names a file).")
        if label == REAL_LABEL or label in models:
            raise RecipeError(f"--model {spec!r}: label {label!r} is taken; name it with LABEL=PATH.")
        if not Path(path).exists():
            raise RecipeError(f"--model {spec!r}: no such file or directory: {path}")
        models[label] = path
    if not models:
        raise RecipeError("--model: give at least one generator to evaluate.")
    return models


def load_contrast(recipe: Recipe, name: str, source: Any) -> Any:
    """One contrast split, checked for the recipe's response column."""
    ds = load_source(source, recipe, f"evaluate.contrast.{name}")
    column = recipe.data.response_column
    if column not in ds.column_names:
        raise RecipeError(
            f"evaluate.contrast.{name}: column '{column}' (data.response_column) not found; "
            f"available: {', '.join(ds.column_names)}."
        )
    return ds


def judge_sources(
    recipe: Recipe, target_train: list[str], exclude: list[str]
) -> dict[str, list[str] | None] | None:
    """The domain judge's real texts from ``evaluate.contrast``, as :func:`evaluate_texts` takes them:
    ``judge_target`` (the recipe's side), ``contrast`` and ``contrast_test`` (None without a test split).

    The target side is the whole target training source (not capped by ``data.max_train_samples``) less
    the ``exclude`` texts (the reference row the report scores); each side at most ``evaluate.judge_samples``
    rows, the contrast test split at most ``evaluate.max_samples``.
    """
    contrast = recipe.evaluate.contrast
    if contrast is None:
        return None
    settings, data = recipe.evaluate, recipe.data
    full = load_source(data.train, recipe, "data.train")[data.response_column]
    skip = set(exclude)
    target_train = [t for t in full if isinstance(t, str) and t.strip() and t not in skip] or target_train
    sides: dict[str, list[str]] = {}
    for name, source in (("train", contrast.train), ("test", contrast.test)):
        if source is None:
            continue
        ds = load_contrast(recipe, name, source)
        texts = [
            t
            for t in ds.shuffle(seed=settings.seed)[data.response_column]
            if isinstance(t, str) and t.strip()
        ]
        sides[name] = texts[: settings.judge_samples] if name == "train" else texts[: settings.max_samples]
    if len(sides["train"]) < 2 or ("test" in sides and not sides["test"]):
        raise RecipeError("evaluate.contrast: the contrast side needs at least 2 training responses (and a "
                          "non-empty test split when one is given).")  # fmt: skip
    return {
        "judge_target": target_train[: settings.judge_samples],
        "contrast": sides["train"],
        "contrast_test": sides.get("test"),
    }


def evaluation_config(settings: EvaluateSettings) -> EvaluationConfig:
    """The metrics' part of the recipe's ``evaluate:`` section."""
    return EvaluationConfig(
        encoder=settings.encoder,
        folds=settings.folds,
        seed=settings.seed,
        mauve=settings.mauve,
        judge_samples=settings.judge_samples,
        trust_remote_code=settings.trust_remote_code,
    )


def _check_models(models: dict[str, str]) -> None:
    """Every --model before anything loads: a JSONL file's rows must hold text, a generator directory's
    weights must be readable (either would otherwise fail after the encoder has loaded)."""
    for path in models.values():
        if Path(path).suffix == ".jsonl":
            jsonl_rows(Path(path))
        elif Path(path).is_dir():
            check_weights_readable(Path(path), "--model", MODEL_TODO)


def evaluate(recipe: Recipe, model_specs: list[str], out_dir: str | Path) -> dict[str, Any]:
    """``gan-rl evaluate``: every generator on the held-out prompts; metrics.json, report.md, plots."""
    missing = [name for module, name in EVAL_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise RecipeError(
            f"gan-rl evaluate needs the eval extra ({', '.join(missing)} not installed): "
            "pip install 'gan-rl[eval]'."
        )
    settings = recipe.evaluate
    out = Path(out_dir)
    check_writable_dir(out, "--output-dir")  # first: before any model is sampled for a report it cannot write
    models = parse_models(model_specs)
    if settings.mauve and not mauve_available():
        raise RecipeError(
            "evaluate.mauve: MAUVE needs the mauve-text package, which is not installed; "
            "pip install 'gan-rl[eval]', or set evaluate.mauve: false."
        )
    start = time.time()
    prompts, reals, train_all = held_out(recipe)
    train_reals = train_all[: len(reals)]
    _check_models(models)
    encoder_name = resolve_checkpoint(settings.encoder, recipe.resolve_path, "evaluate.encoder")
    try:
        encoder = TextEncoder(encoder_name, device=_device(), trust_remote_code=settings.trust_remote_code)
    except ValueError as exc:
        raise RecipeError(f"evaluate.encoder: {exc}") from None
    generated = {label: generations_for(recipe, path, prompts) for label, path in models.items()}
    for label, by_temperature in generated.items():
        write_jsonl(out / "generations" / f"{label}.jsonl", prompts, reals, by_temperature)
    judge = judge_sources(recipe, train_all[len(reals) :] or train_all, exclude=train_reals) or {}
    metrics = evaluate_texts(
        reals, generated, evaluation_config(settings), reference=train_reals, encoder=encoder, **judge
    )
    report = {
        "models": models,
        "settings": asdict(settings),
        **{key: value for key, value in metrics.items() if key != "settings"},
        "seconds": round(time.time() - start, 1),
    }
    return save_evaluation(report, out, reals, generated, prompts)
