"""What changes when the generator is sharded (DeepSpeed ZeRO-3, FSDP) or wrapped (DeepSpeed, DDP).

gan-rl touches the generator's weights outside TRL's own training step in four places: the warm-up and
the run summary sample from it, the ``head`` discriminator's frozen encoder reads its hidden states, and
the SFT term forwards it. Under ZeRO-3 or FSDP each rank holds a shard of every weight, so every such
forward must go through the model as TRL prepared it (hooks that gather the shards), on every rank at
once, the same number of times. This module holds what those places share, done the way TRL does it:

* :func:`sampling_model`: TRL's ``unwrap_model_for_generation`` (ZeRO-3: the weights gathered for the
  duration, so a rank samples on its own) and FSDP v1's ``summon_full_params``;
* :func:`prepare_frozen_copy`: TRL's ``prepare_deepspeed`` / ``prepare_fsdp``, as for its reference model;
* :func:`zero3_init_disabled`: build or convert a whole model on one rank while ZeRO-3 is on (otherwise
  transformers partitions it under ``deepspeed.zero.Init``, a collective the other ranks never join);
* :func:`sampling_settings`: the trainer's own sampling settings, also when TRL generates with vLLM.

The command line's checks of a distributed request are :mod:`gan_rl.cli.backends`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

from gan_rl.utils.library_internals import distributed_backend, hf_deepspeed_config

logger = logging.getLogger(__name__)


def is_sharded(accelerator: Any) -> bool:
    """Whether the generator's weights are sharded across ranks (ZeRO-3 or FSDP): every forward of them
    is then a collective."""
    backend = distributed_backend(accelerator)
    return backend.is_zero3 or backend.is_fsdp


@contextlib.contextmanager
def zero3_init_disabled() -> Iterator[None]:
    """Load or build a whole model on this rank alone, even under ZeRO-3.

    With ZeRO-3 (``zero3_init_flag``) transformers builds every model inside ``deepspeed.zero.Init``, which
    partitions its weights across ranks as it goes: a collective. A model that one rank builds and saves
    (an ``init_config`` model, a dequantized GGUF file) or that every rank keeps whole (the discriminator's
    own classifier or encoder) must be built outside it. transformers decides from its global DeepSpeed
    config, so it is set aside for the duration and put back.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    config = hf_deepspeed_config()
    if config is None or not hf_deepspeed.is_deepspeed_zero3_enabled():
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


@contextlib.contextmanager
def sampling_model(trainer: Any) -> Iterator[Any]:
    """The policy, ready to sample from on this rank, as TRL's own generation gets it.

    ``unwrap_model_for_generation`` gathers ZeRO-3 shards for the duration (``ds3_gather_for_generation``)
    and switches gradient checkpointing off; FSDP v1 needs ``summon_full_params`` on the wrapped model, FSDP
    v2 samples through the model's registered ``generate``. Every rank must enter it together.
    """
    from trl.models import unwrap_model_for_generation

    args = trainer.args
    with (
        unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=getattr(args, "ds3_gather_for_generation", True),
            gradient_checkpointing_kwargs=getattr(args, "gradient_checkpointing_kwargs", None),
        ) as unwrapped,
        distributed_backend(trainer.accelerator).summon_full_params(trainer.model_wrapped, recurse=False),
    ):
        yield unwrapped


def prepare_frozen_copy(model: torch.nn.Module, accelerator: Any) -> torch.nn.Module:
    """A frozen model (the ``head`` encoder's copy of the initial generator) prepared as TRL prepares its
    reference model: a DeepSpeed inference engine (ZeRO-3: sharded like the policy), an FSDP module, or
    the model on this rank's device."""
    from trl.models import prepare_deepspeed, prepare_fsdp

    model.requires_grad_(False).eval()
    if getattr(accelerator.state, "deepspeed_plugin", None) is not None:
        return prepare_deepspeed(model, accelerator)
    if getattr(accelerator.state, "fsdp_plugin", None) is not None:
        return prepare_fsdp(model, accelerator)
    return model.to(accelerator.device)


def sampling_settings(trainer: Any, tokenizer: Any) -> dict[str, Any]:
    """``generate`` keyword arguments that sample as the trainer samples its completions.

    Without vLLM, TRL's own ``generation_kwargs``. With vLLM TRL builds none (its settings go to vLLM's
    ``SamplingParams``); the warm-up and the summary still sample with ``generate``, so they are built
    here the way TRL builds them without vLLM: temperature, top_p, top_k, min_p, repetition penalty, the
    completion length and the recipe's ``generation_kwargs``. Keys of ``generation_kwargs`` that
    ``generate`` does not know (vLLM-only ones) are left out, with a warning naming them.
    """
    own = getattr(trainer, "generation_kwargs", None)
    if own:
        return dict(own)
    from transformers import GenerationConfig

    args = trainer.args
    settings: dict[str, Any] = {
        "max_new_tokens": getattr(trainer, "max_completion_length", args.max_completion_length),
        "do_sample": True,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": getattr(trainer, "eos_token_ids", None) or tokenizer.eos_token_id,
    }
    for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"):
        value = getattr(trainer, name, getattr(args, name, None))
        if value is not None:
            settings[name] = value
    known = set(GenerationConfig().to_dict())
    extra = dict(getattr(args, "generation_kwargs", None) or {})
    dropped = sorted(k for k in extra if k not in known)
    if dropped:
        logger.warning(
            "Warm-up and summary samples use transformers' generate, which has no %s (vLLM-only "
            "generation_kwargs); they are left out there.",
            ", ".join(dropped),
        )
    settings.update({k: v for k, v in extra.items() if k in known})
    return settings


def describe_backend(accelerator: Any) -> str:
    """How the run is distributed, for ``run_summary.json``: ``deepspeed-zero3``, ``fsdp2``, ``ddp`` or
    ``single``."""
    state = accelerator.state
    plugin = getattr(state, "deepspeed_plugin", None)
    if plugin is not None:
        return f"deepspeed-zero{plugin.zero_stage}"
    fsdp = getattr(state, "fsdp_plugin", None)
    if fsdp is not None:
        return f"fsdp{getattr(fsdp, 'fsdp_version', 1)}"
    return "ddp" if accelerator.num_processes > 1 else "single"
