"""Held-out evaluation: ``gan-rl generate`` and ``gan-rl evaluate``.

Every generator (base, SFT, GAN-trained) answers the same held-out prompts with the same sampling
settings; its responses are compared with the real ones by metrics that no part of training sees
(:mod:`gan_rl.eval.metrics`). A reference row does the same for real responses of the training split, so each
number comes with the value that "as real as the data itself" would get (two-sample accuracy ~0.5, the
Fréchet distance of two real samples, the real data's own diversity).

With several sampling temperatures (``evaluate.temperatures``, ``--temperature 0.7,0.85,1.0``) every model
is sampled at each, and the report draws its quality-diversity curve: distance to the real responses
against diversity, one point per temperature. A model is then compared with another at its best
temperature, as "Language GANs falling short" (Caccia et al., ICLR 2020) showed a fair comparison needs:
a tuned temperature alone moved plain MLE past every text GAN of its time.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gan_rl.cli.data import format_prompt, load_raw_splits, load_source, uses_chat_format
from gan_rl.cli.models import check_weights_readable, load_for_generation, resolve_checkpoint
from gan_rl.cli.outputs import check_writable_dir, check_writable_file
from gan_rl.cli.recipe import EvaluateSettings, Recipe
from gan_rl.errors import RecipeError
from gan_rl.eval.judge import SideJudge
from gan_rl.eval.metrics import (
    MAUVE_SETTINGS,
    TextEncoder,
    distinct_n,
    frechet_distance,
    judge_shift,
    length_stats,
    mauve_available,
    mauve_score,
    ngram_features,
    self_bleu,
    two_sample_accuracy,
    word_tokens,
)
from gan_rl.utils.generation import sample_completions

# What ``gan-rl evaluate`` imports beyond the training path (module -> package): the ``eval`` extra.
EVAL_PACKAGES = {"sklearn": "scikit-learn", "scipy": "scipy", "matplotlib": "matplotlib"}
REAL_LABEL = "real"  # the reference row: real responses of the training split
METRICS_FILE, REPORT_FILE = "metrics.json", "report.md"
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


def result_key(label: str, temperature: float, temperatures: list[float]) -> str:
    """A results row's name: the model's label, with ``@T`` when several temperatures are compared."""
    return label if len(temperatures) == 1 else f"{label}@{temperature:g}"


def best_temperatures(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each model's best temperature: the lowest embedding two-sample accuracy (the closest to real in
    the encoder's space), ties to the higher MAUVE. ``{model: {"temperature": T, "row": key}}``."""
    best: dict[str, tuple[tuple[float, float], float, str]] = {}
    for key, row in results.items():
        model = row.get("model")
        if model is None:
            continue
        mauve = row.get("mauve")
        score = (row["two_sample_acc"], -(mauve if mauve is not None else 0.0))
        if model not in best or score < best[model][0]:
            best[model] = (score, row["temperature"], key)
    return {model: {"temperature": t, "row": key} for model, (_, t, key) in best.items()}


def text_metrics(texts: list[str], seed: int) -> dict[str, Any]:
    """Diversity and length of one set of texts (generated or real)."""
    return {
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "self_bleu": self_bleu(texts, seed=seed),
        "mean_length": float(np.mean([len(word_tokens(t)) for t in texts])) if texts else 0.0,
        "lengths": [len(word_tokens(t)) for t in texts],
    }


def compare(real: list[str], real_emb: np.ndarray, texts: list[str], emb: np.ndarray, settings) -> dict:
    """How far ``texts`` sit from the real responses: two-sample tests, Fréchet distance, lengths."""
    real_ng, gen_ng = ngram_features(real, texts)
    lengths = length_stats(texts, real)
    return {
        "two_sample_acc": two_sample_accuracy(real_emb, emb, folds=settings.folds, seed=settings.seed),
        "two_sample_acc_ngram": two_sample_accuracy(
            real_ng, gen_ng, folds=settings.folds, seed=settings.seed
        ),
        "frechet": frechet_distance(real_emb, emb),
        "length_wasserstein": lengths["wasserstein"],
        "length_ks": lengths["ks"],
    }


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


def domain_judge(
    recipe: Recipe, target_train: list[str], target_test: list[str], exclude: list[str]
) -> tuple[SideJudge, dict[str, float]] | None:
    """The :class:`SideJudge` of ``evaluate.contrast``, and its check on real held-out data of both sides
    (accuracy, mean P(target) of each side) when a contrast test split is given.

    It trains on the whole target training source (not capped by ``data.max_train_samples``) less the
    ``exclude`` texts (the reference row the report scores), up to ``evaluate.judge_samples`` per side.
    """
    contrast = recipe.evaluate.contrast
    if contrast is None:
        return None
    settings, data = recipe.evaluate, recipe.data
    full = load_source(data.train, recipe, "data.train")[data.response_column]
    skip = set(exclude)
    target_train = [t for t in full if isinstance(t, str) and t.strip() and t not in skip] or target_train
    sides = {}
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
    judge = SideJudge(target_train[: settings.judge_samples], sides["train"], settings.seed)
    facts: dict[str, float] = {"judge_rows_per_side": float(judge.rows_per_side)}
    if "test" in sides:
        facts.update(
            judge_accuracy=judge.accuracy(target_test, sides["test"]),
            p_target_real=judge.prob_target(target_test),
            p_contrast_real=judge.prob_target(sides["test"]),
        )
    return judge, facts


def evaluate(recipe: Recipe, model_specs: list[str], out_dir: str | Path) -> dict[str, Any]:
    """``gan-rl evaluate``: every generator on the held-out prompts; metrics.json, report.md, plots."""
    missing = [name for module, name in EVAL_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise RecipeError(
            f"gan-rl evaluate needs the eval extra ({', '.join(missing)} not installed): "
            "pip install 'gan-rl[eval]'."
        )
    from gan_rl.eval.plots import plot_evaluation, plot_frontier

    settings = recipe.evaluate
    out = Path(out_dir)
    check_writable_dir(out, "--output-dir")  # first: before any model is sampled for a report it cannot write
    models = parse_models(model_specs)
    if settings.mauve and not mauve_available():
        raise RecipeError(
            "evaluate.mauve: MAUVE needs the mauve-text package, which is not installed; "
            "pip install 'gan-rl[eval]', or set evaluate.mauve: false."
        )
    temperatures = settings.sampling_temperatures
    start = time.time()
    prompts, reals, train_all = held_out(recipe)
    train_reals = train_all[: len(reals)]
    # Every --model is checked before anything loads: a JSONL file's rows must hold text, a generator
    # directory's weights must be readable (either would otherwise fail after the encoder has loaded).
    for path in models.values():
        if Path(path).suffix == ".jsonl":
            jsonl_rows(Path(path))
        elif Path(path).is_dir():
            check_weights_readable(Path(path), "--model", MODEL_TODO)
    encoder_name = resolve_checkpoint(settings.encoder, recipe.resolve_path, "evaluate.encoder")
    try:
        encoder = TextEncoder(encoder_name, device=_device(), trust_remote_code=settings.trust_remote_code)
    except ValueError as exc:
        raise RecipeError(f"evaluate.encoder: {exc}") from None
    generated = {label: generations_for(recipe, path, prompts) for label, path in models.items()}
    for label, by_temperature in generated.items():
        write_jsonl(out / "generations" / f"{label}.jsonl", prompts, reals, by_temperature)

    real_emb = encoder.encode(reals)
    judged = domain_judge(recipe, train_all[len(reals) :] or train_all, reals, exclude=train_reals)

    rows: dict[str, tuple[str | None, float | None, list[str]]] = {REAL_LABEL: (None, None, train_reals)}
    for label, by_temperature in generated.items():
        for t, texts in by_temperature.items():
            rows[result_key(label, t, temperatures)] = (label, t, texts)
    results: dict[str, dict[str, Any]] = {}
    for key, (label, temperature, texts) in rows.items():
        emb = encoder.encode(texts)
        row = {**text_metrics(texts, settings.seed), **compare(reals, real_emb, texts, emb, settings)}
        if settings.mauve:
            row["mauve"] = mauve_score(real_emb, emb, seed=settings.seed)
        if label is not None:
            row.update(model=label, temperature=temperature)
        if judged is not None:
            judge, facts = judged
            row["judge_prob_target"] = judge.prob_target(texts)
            if facts:
                row["judge_shift"] = judge_shift(
                    row["judge_prob_target"], facts["p_target_real"], facts["p_contrast_real"]
                )
        results[key] = row
    report = {
        "models": models,
        "settings": asdict(settings),
        "temperatures": temperatures,
        "best_temperature": best_temperatures(results) if len(temperatures) > 1 else None,
        "mauve": (
            {
                "features": settings.encoder,
                "texts_per_side": len(prompts),
                "seed": settings.seed,
                **MAUVE_SETTINGS,
            }
            if settings.mauve
            else None
        ),
        "held_out_prompts": len(prompts),
        "test_real": text_metrics(reals, settings.seed),
        "judge": judged[1] if judged is not None else None,
        "results": results,
        "seconds": round(time.time() - start, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps(report, indent=2, default=_json_default))
    report["plots"] = [str(p) for p in plot_evaluation(results, out)]
    if len(temperatures) > 1:
        report["plots"] += [str(p) for p in plot_frontier(results, out)]
    (out / REPORT_FILE).write_text(markdown_report(report, prompts, reals, generated))
    (out / METRICS_FILE).write_text(json.dumps(report, indent=2, default=_json_default))
    return report


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


COLUMNS = [
    ("two_sample_acc", "two-sample acc (emb.)", "0.5 = indistinguishable"),
    ("two_sample_acc_ngram", "two-sample acc (n-gram)", "0.5 = indistinguishable"),
    ("mauve", "MAUVE", "1 = same distribution"),
    ("frechet", "Fréchet dist.", "lower = closer"),
    ("distinct_1", "distinct-1", "real's value"),
    ("distinct_2", "distinct-2", "real's value"),
    ("self_bleu", "self-BLEU", "real's value; higher = less diverse"),
    ("mean_length", "mean length", "words"),
    ("length_wasserstein", "length W1", "lower = closer"),
    ("judge_prob_target", "judge P(target)", "real target's value"),
    ("judge_shift", "judge shift", "0 = contrast side, 1 = target side"),
]


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_report(report: dict[str, Any], prompts: list[str], reals: list[str], generated: dict) -> str:
    results = report["results"]
    columns = [c for c in COLUMNS if any(c[0] in r for r in results.values())]
    temperatures = report.get("temperatures") or [report["settings"]["temperature"]]
    sampled_at = (
        f"temperature {temperatures[0]:g}"
        if len(temperatures) == 1
        else f"at each of the temperatures {', '.join(f'{t:g}' for t in temperatures)} (row MODEL@T)"
    )
    lines = [
        "# gan-rl evaluation",
        "",
        f"{report['held_out_prompts']} held-out prompts, one sampled response each "
        f"({sampled_at}, top-p {report['settings']['top_p']}, "
        f"at most {report['settings']['max_new_tokens']} new tokens); sentence encoder "
        f"`{report['settings']['encoder']}`. Every metric compares with the real held-out responses. "
        f"Row `{REAL_LABEL}`: real responses of the training split, the value a generator as real as the "
        "data would get.",
        "",
        "| model | " + " | ".join(c[1] for c in columns) + " |",
        "| --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for label, row in results.items():
        lines.append(f"| {label} | " + " | ".join(_fmt(row.get(c[0])) for c in columns) + " |")
    lines += ["", "Reading: " + "; ".join(f"{c[1]}: {c[2]}" for c in columns) + "."]
    if report.get("best_temperature"):
        lines += [
            "",
            "## At each model's best temperature",
            "",
            "Best: the lowest embedding two-sample accuracy of the model's temperatures (ties: the higher "
            "MAUVE). The quality-diversity plot draws every temperature.",
            "",
            "| model | temperature | " + " | ".join(c[1] for c in columns) + " |",
            "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |",
        ]
        for model, best in report["best_temperature"].items():
            row = results[best["row"]]
            lines.append(
                f"| {model} | {best['temperature']:g} | "
                + " | ".join(_fmt(row.get(c[0])) for c in columns)
                + " |"
            )
    if report.get("mauve"):
        m = report["mauve"]
        lines += [
            "",
            f"MAUVE: mauve-text on the `{m['features']}` embeddings, {m['texts_per_side']} texts per side, "
            f"k-means buckets {m['num_buckets']} (n/10), scaling factor {m['mauve_scaling_factor']}, "
            f"seed {m['seed']}. The score depends on the number of texts and these settings: compare it "
            "only with scores of equal sample size and settings.",
        ]
    if report["judge"]:
        j = report["judge"]
        held_out = (
            f": held-out accuracy {j['judge_accuracy']:.3f}; mean P(target) of real target posts "
            f"{j['p_target_real']:.3f}, of real contrast posts {j['p_contrast_real']:.3f}"
            if "judge_accuracy" in j
            else " (no contrast test split: its accuracy is unknown)"
        )
        rows = int(j.get("judge_rows_per_side", 0))
        lines += [
            "",
            f"Domain judge (logistic regression on word 1-2-grams, trained on {rows} real training responses "
            f"per side){held_out}.",
        ]
    for plot in report.get("plots", []):
        lines += ["", f"![{Path(plot).stem}]({Path(plot).name})"]
    lines += ["", "## Samples", ""]
    for i in range(min(5, len(prompts))):
        lines += [f"**prompt** {prompts[i]}", "", f"- real: {reals[i]}"]
        lines += [
            f"- {result_key(label, t, temperatures)}: {texts[i]}"
            for label, by_temperature in generated.items()
            for t, texts in by_temperature.items()
        ]
        lines.append("")
    return "\n".join(lines) + "\n"
