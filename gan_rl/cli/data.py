"""Loading prompt/response data and shaping it for TRL.

A split's source is a local file (``path``), an http(s) URL downloaded once into a cache (``url``, or a
``path`` that is a URL; a local ``path`` that exists wins over its ``url``), a hub dataset (``hub``) or a
synthetic set; a downloaded file goes through the same checks as a local one.

Every split ends up with three columns: ``prompt`` (what the generator sees: chat messages for chat
models, plain text otherwise), ``prompt_text`` (the raw prompt) and ``real_response``. TRL passes the
last two to reward functions as keyword arguments, which is how the discriminator reward sees the real
response paired with each generated one.
"""

from __future__ import annotations

import codecs
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, load_dataset

from gan_rl.cli.downloads import ChecksumError, DownloadError, cached_path, fetch, is_url, url_file_name
from gan_rl.cli.recipe import DataSettings, DataSource, Recipe
from gan_rl.cli.synthetic import SYNTHETIC
from gan_rl.errors import RecipeError
from gan_rl.trainer.dataset import adversarial_dataset
from gan_rl.trainer.dataset import format_prompt as shape_prompt

FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
# Builders that read text files, which must be UTF-8 (parquet stores its strings as UTF-8 itself).
TEXT_BUILDERS = ("json", "csv")
UTF8_CHUNK = 1 << 20

logger = logging.getLogger(__name__)


def load_source(source: DataSource, recipe: Recipe, where: str) -> Dataset:
    """Read one split from a local file, a file downloaded from a URL, the hub, or a synthetic generator."""
    if source.synthetic is not None:
        return Dataset.from_list(SYNTHETIC[source.synthetic](source.rows, source.seed))
    if source.path is not None or source.url is not None:
        file = source_file(source, recipe, where)
        try:
            return load_file(file.path, f"{where}.{file.field}", where)
        except RecipeError as exc:
            if file.url is None:
                raise
            if file.downloaded:  # a bad download is not kept: the next run fetches it again
                file.path.unlink(missing_ok=True)
                note = "removed from the download cache; the next run downloads it again"
            else:
                note = "a cached copy; delete it to download again"
            raise RecipeError(f"{exc} (downloaded from {file.url}: {note})") from None
    try:
        return load_dataset(source.hub, source.config, split=source.split)
    except Exception as exc:  # noqa: BLE001 - network, missing dataset or split
        raise RecipeError(
            f"{where}.hub: cannot load {source.hub!r} (split {source.split!r}): {exc}"
        ) from None


@dataclass(frozen=True)
class SourceFile:
    """The local file a ``path`` / ``url`` source is read from, and how it got there."""

    path: Path
    # The recipe field that named it (``path`` or ``url``), for messages.
    field: str
    # The URL it was downloaded from (a copy in the download cache), else None (the user's own file).
    url: str | None = None
    # Downloaded by this call (not found in the cache).
    downloaded: bool = False


def source_url(source: DataSource) -> str | None:
    """The http(s) URL a source falls back on: ``url``, or a ``path`` that is itself a URL."""
    if source.url is not None:
        return source.url.strip()
    if source.path is not None and is_url(source.path):
        return source.path.strip()
    return None


def local_path(source: DataSource, recipe: Recipe) -> Path | None:
    """The source's local file (``path``, relative to the recipe), or None when ``path`` is absent or a URL."""
    if source.path is None or is_url(source.path):
        return None
    return recipe.resolve_path(source.path)


def source_file(source: DataSource, recipe: Recipe, where: str) -> SourceFile:
    """The file to read for a ``path`` / ``url`` source: the local ``path`` when that file exists (a local
    copy always wins), else the download of the URL (fetched once into the cache, see
    :mod:`gan_rl.cli.downloads`). Without either: one error naming the local path, the URL, why the
    download failed and where a copy would be found."""
    local = local_path(source, recipe)
    url = source_url(source)
    if local is not None:
        check_file_type(local.suffix, f"{where}.path", str(local))
        if local.is_file():
            return SourceFile(local, "path")
        if url is None:
            raise RecipeError(f"{where}.path: file not found: {local}")
    assert url is not None  # parse_recipe: a path / url source names at least one of them
    field = "url" if source.url is not None else "path"
    check_file_type(Path(url_file_name(url)).suffix, f"{where}.{field}", url)
    try:
        path, downloaded = fetch(url, sha256=source.sha256)
    except ChecksumError as exc:
        raise RecipeError(
            f"{where}.sha256: the file downloaded from {url} has SHA-256 {exc.got}, not {exc.expected}: the "
            f"published file changed or {where}.sha256 is wrong; nothing was kept in the cache."
        ) from None
    except DownloadError as exc:
        if local is not None:
            raise RecipeError(
                f"{where}: file not found locally at {local} ({where}.path) and the download from {url} "
                f"({where}.url) failed: {exc}; put a copy at {local}."
            ) from None
        raise RecipeError(
            f"{where}.{field}: cannot download {url}: {exc}; put a copy at {cached_path(url)} "
            f"or point {where}.path at a local copy."
        ) from None
    if downloaded:
        logger.info(
            "%s: downloaded %s (%.1f MB) into %s; later runs read this copy.",
            where,
            url,
            path.stat().st_size / 1e6,
            path,
        )
    return SourceFile(path, field, url, downloaded)


def check_file_type(suffix: str, field: str, name: str) -> str:
    """The ``datasets`` builder for a file suffix, or the error naming ``field`` and the valid types."""
    builder = FILE_BUILDERS.get(suffix.lower())
    if builder is None:
        raise RecipeError(
            f"{field}: unsupported file type '{suffix}' ({name}); valid: {', '.join(FILE_BUILDERS)}."
        )
    return builder


def load_file(path: Path, field: str, where: str) -> Dataset:
    """A local data file, checked first (empty, not UTF-8, a JSON line that does not parse) so that a
    bad file is one line naming the file and the line, not a library traceback. ``field`` is the recipe
    field that named the file (``data.train.path``), ``where`` its source (``data.train``)."""
    builder = check_file_type(path.suffix, field, str(path))
    if is_blank_file(path):
        raise RecipeError(f"{field}: {path} is empty (0 rows).")
    if builder in TEXT_BUILDERS:  # pyarrow reads it, and fails at the first row used, naming no row
        problem = utf8_problem(path)
        if problem is not None:
            raise RecipeError(f"{field}: {problem}; save the file as UTF-8.")
    try:
        return load_dataset(builder, data_files=str(path), split="train")
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault
        if "corresponds to no data" in str(exc):  # a file with a header and no rows
            raise RecipeError(f"{where}: the dataset is empty ({path}).") from None
        problem = json_problem(path) if builder == "json" else None
        if problem is not None:
            raise RecipeError(f"{field}: {problem}.") from None
        reason = str(exc) or type(exc).__name__
        raise RecipeError(f"{field}: cannot read {path} as {builder}: {reason}") from None


def is_blank_file(path: Path) -> bool:
    """Empty, or whitespace only."""
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            if chunk.strip():
                return False
    return True


def utf8_problem(path: Path) -> str | None:
    """``FILE:LINE: not UTF-8 text (byte N, 0xXX)`` for the first bytes of ``path`` that are not UTF-8,
    else None. Read in 1 MiB chunks (a multi-byte character may straddle two), one pass over the file.

    The datasets library reads such a file without complaint and the first use of the bad row fails
    with a bare ``UnicodeDecodeError`` from pyarrow, naming neither the file nor the row.
    """
    pending, offset, line = b"", 0, 1  # undecoded bytes (a split character), their offset, their line
    with path.open("rb") as f:
        while True:
            chunk = f.read(UTF8_CHUNK)
            data = pending + chunk
            try:
                _, consumed = codecs.utf_8_decode(data, "strict", not chunk)
            except UnicodeDecodeError as exc:
                where = line + data[: exc.start].count(b"\n")
                return f"{path}:{where}: not UTF-8 text (byte {offset + exc.start}, 0x{data[exc.start]:02x})"
            line += data[:consumed].count(b"\n")
            offset += consumed
            pending = data[consumed:]
            if not chunk:
                return None


def json_problem(path: Path) -> str | None:
    """The first problem of a ``.json`` / ``.jsonl`` file as ``FILE:LINE: reason`` (the datasets library
    names a byte position, or nothing), or None when none is found. A ``.json`` file may hold one JSON
    document or JSON Lines; a ``.jsonl`` file one JSON object per line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return f"{path}:{line}: not UTF-8 text (byte {exc.start})"
    if path.suffix.lower() == ".json":
        try:
            json.loads(text)
            return None
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":  # "Extra data": more than one document, so read it as JSON Lines
                return f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            return (
                f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno}); one JSON object per line"
            )
        if not isinstance(row, dict):
            return f"{path}:{number}: expected a JSON object (one row), got {type(row).__name__}"
    return None


def check_columns(ds: Dataset, data: DataSettings, where: str) -> None:
    """The prompt and response columns exist and the split is not empty."""
    for key in ("prompt_column", "response_column"):
        column = getattr(data, key)
        if column not in ds.column_names:
            raise RecipeError(
                f"data.{key}: column '{column}' not found in {where}; "
                f"available columns: {', '.join(ds.column_names)}."
            )
    if len(ds) == 0:
        raise RecipeError(f"{where}: the dataset is empty.")


def load_raw_splits(recipe: Recipe) -> dict[str, Dataset]:
    """The splits (``train``, and ``test`` / ``validation`` when the recipe has them), checked and limited,
    before any tokenizer or model is loaded.

    ``data.validation_fraction`` carves the validation rows out of the whole train source first (shuffled
    with the recipe's seed, so every command of a recipe sees the same split and none trains on them),
    then ``max_train_samples`` / ``max_validation_samples`` cap what is left.
    """
    data = recipe.data
    splits = {"train": (data.train, data.max_train_samples)}
    if data.test is not None:
        splits["test"] = (data.test, data.max_test_samples)
    if data.validation is not None:
        splits["validation"] = (data.validation, data.max_validation_samples)
    out = {}
    for name, (source, limit) in splits.items():
        where = f"data.{name}"
        try:
            _load_split(recipe, name, source, limit, out)
        except UnicodeDecodeError as exc:  # text the checks before loading missed (a parquet file's)
            raise RecipeError(
                f"{where}: {source_name(source, recipe)} holds text that is not UTF-8 ({exc.reason}, byte "
                f"0x{exc.object[exc.start]:02x}); save it as UTF-8."
            ) from None
    return {name: out[name] for name in ("train", "validation", "test") if name in out}


def _load_split(recipe: Recipe, name: str, source: DataSource, limit: int | None, out: dict) -> None:
    """One split of :func:`load_raw_splits` into ``out`` (with ``validation_fraction``, the validation
    split carved out of the train split too)."""
    data = recipe.data
    where = f"data.{name}"
    ds = load_source(source, recipe, where)
    check_columns(ds, data, where)
    if name == "train" and data.validation_fraction is not None:
        ds, validation = carve_validation(ds, data.validation_fraction, recipe_seed(recipe))
        out["validation"] = drop_rows_without_text(
            cap(validation, data.max_validation_samples),
            data,
            "data.validation_fraction",
            source_name(source, recipe),
        )
    out[name] = drop_rows_without_text(cap(ds, limit), data, where, source_name(source, recipe))


def cap(ds: Dataset, limit: int | None) -> Dataset:
    """The first ``limit`` rows (all when None)."""
    return ds if limit is None else ds.select(range(min(limit, len(ds))))


def recipe_seed(recipe: Recipe) -> int:
    """The recipe's seed: ``trainer.seed`` (TRL's default 42 when unset), which ``gan-rl sft`` shares."""
    seed = recipe.trainer.get("seed", 42)
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 42


def carve_validation(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(train, validation): ``fraction`` of the rows, at least one, drawn with ``seed``; the rest train, in
    their original order (so ``max_train_samples`` still takes the file's first rows of what is left)."""
    n_val = max(1, round(len(ds) * fraction))
    if n_val >= len(ds):
        raise RecipeError(
            f"data.validation_fraction: {fraction} of {len(ds)} training rows leaves none to train on; "
            "use a smaller fraction or give data.validation."
        )
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(ds))
    validation = sorted(order[:n_val].tolist())
    chosen = set(validation)
    train = [i for i in range(len(ds)) if i not in chosen]
    return ds.select(train), ds.select(validation)


def source_name(source: DataSource, recipe: Recipe) -> str:
    """The file, hub dataset or synthetic set a split comes from, for messages (a downloaded file: its
    cached copy and the URL)."""
    local = local_path(source, recipe)
    url = source_url(source)
    if local is not None and (url is None or local.is_file()):
        return str(local)
    if url is not None:
        return f"{cached_path(url)} (downloaded from {url})"
    if source.hub is not None:
        return f"hub dataset {source.hub!r} (split {source.split!r})"
    return f"synthetic {source.synthetic!r}"


def drop_rows_without_text(ds: Dataset, data: DataSettings, where: str, name: str) -> Dataset:
    """Rows with a text prompt and a response that is not empty or blank; an error when none is left."""
    prompt, response = data.prompt_column, data.response_column
    kept = ds.filter(
        lambda row: (
            isinstance(row[prompt], str) and isinstance(row[response], str) and bool(row[response].strip())
        )
    )
    if len(kept) == 0:
        responses = [r for r in ds[response] if isinstance(r, str)]
        if responses and not any(r.strip() for r in responses):
            raise RecipeError(
                f"{where}: every response in column '{response}' (data.response_column) of {name} is empty; "
                "there is nothing to train on."
            )
        raise RecipeError(
            f"{where}: no row of {name} has text in both column '{prompt}' (data.prompt_column) and "
            f"column '{response}' (data.response_column)."
        )
    return kept


def uses_chat_format(data: DataSettings, tokenizer: Any) -> bool:
    """Chat messages for chat models (TRL's conversational format), plain text otherwise."""
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if data.format == "chat" and not has_template:
        raise RecipeError(
            "data.format: 'chat' needs a tokenizer with a chat template; use 'plain' or 'auto'."
        )
    return data.format == "chat" or (data.format == "auto" and has_template)


def format_prompt(text: str, data: DataSettings, chat: bool) -> str | list[dict[str, str]]:
    """The generator's input for one prompt, as the recipe's ``data`` section shapes it."""
    return shape_prompt(text, chat, data.system_prompt, data.prompt_template)


def to_trl_dataset(ds: Dataset, data: DataSettings, chat: bool) -> Dataset:
    """Columns ``prompt``, ``prompt_text`` and ``real_response`` for TRL's trainers."""
    return adversarial_dataset(
        ds,
        prompt_column=data.prompt_column,
        response_column=data.response_column,
        system_prompt=data.system_prompt,
        prompt_template=data.prompt_template,
        chat=chat,
    )


def data_texts(raw: dict[str, Dataset], data: DataSettings) -> list[str]:
    """Every prompt and response of every split (what a word-level tokenizer is built from)."""
    return [t for ds in raw.values() for col in (data.prompt_column, data.response_column) for t in ds[col]]
