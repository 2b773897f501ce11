"""The command line's checks of a distributed request: a recipe or accelerate config that asks for DeepSpeed
or FSDP gets it, or the run stops with one line naming the setting (accelerate would otherwise fall back to
plain data parallelism silently), before any model loads where it can be.

These are the command line's own (they name recipe sections and ``recipes/accelerate/`` configs); what the
library does under each backend is :mod:`gan_rl.utils.backends`.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from gan_rl.errors import RecipeError
from gan_rl.utils.backends import is_sharded

# accelerate turns a multi-process run into FSDP only from these distributed types (accelerate/state.py):
# on CPU (MULTI_CPU) an FSDP config is dropped and the run trains with DDP.
FSDP_CAPABLE = {
    "MULTI_GPU",
    "MULTI_XPU",
    "MULTI_NPU",
    "MULTI_MLU",
    "MULTI_SDAA",
    "MULTI_MUSA",
    "MULTI_HPU",
    "MULTI_NEURON",
    "FSDP",
}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def requested_backend(settings: Any) -> str | None:
    """``deepspeed`` or ``fsdp`` when the run asks for one (the recipe's ``trainer.deepspeed`` /
    ``trainer.fsdp``, or the accelerate config, which ``accelerate launch`` passes on in the environment),
    else None. ``settings``: TRL's config, or the keyword arguments it is about to be built from."""
    get = settings.get if isinstance(settings, dict) else lambda name: getattr(settings, name, None)
    if get("deepspeed") or _env_flag("ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    if get("fsdp") or _env_flag("ACCELERATE_USE_FSDP"):
        return "fsdp"
    return None


def _where(settings: Any, backend: str, section: str = "trainer") -> str:
    get = settings.get if isinstance(settings, dict) else lambda name: getattr(settings, name, None)
    return f"{section}.{backend}" if get(backend) else "the accelerate config"


# Process-group backends DeepSpeed can use without a GPU (its CPU accelerator defaults to oneCCL's "ccl").
CPU_BACKENDS = ("gloo", "ccl", "mpi")


def check_backend_request(settings: dict[str, Any], section: str = "trainer") -> None:
    """Refuse DeepSpeed settings that accelerate would drop, or that cannot start, on this machine.

    Called with the keyword arguments of TRL's config before it is built: building it sets up the
    processes (``TrainingArguments.__post_init__`` reads ``device``), which is where DeepSpeed would
    start, or silently not. accelerate's rule (accelerate/state.py): ``use_cpu`` switches DeepSpeed off,
    and the run trains with plain DDP. On a machine without a GPU DeepSpeed needs a CPU process-group
    backend (``ddp_backend: gloo``).
    """
    if requested_backend(settings) != "deepspeed":
        return
    where = _where(settings, "deepspeed", section)
    if settings.get("use_cpu") or _env_flag("ACCELERATE_USE_CPU"):
        raise RecipeError(
            f"{where} asks for DeepSpeed, but {section}.use_cpu (or ACCELERATE_USE_CPU) makes accelerate "
            f"train without it; on a CPU-only machine leave use_cpu off and set {section}.ddp_backend: gloo "
            "(recipes/accelerate/deepspeed_zero3_cpu.yaml)."
        )
    backend = settings.get("ddp_backend")
    if not torch.cuda.is_available() and backend not in CPU_BACKENDS:
        raise RecipeError(
            f"{section}.ddp_backend: {backend!r} on a machine without a GPU, where {where} asks for DeepSpeed; "
            f"it needs a CPU backend here: set {section}.ddp_backend: gloo "
            "(recipes/accelerate/deepspeed_zero3_cpu.yaml)."
        )


def setup_distributed(args: Any, section: str = "trainer") -> None:
    """Set up the processes TrainingArguments' way (``args.device``), then refuse an FSDP request that
    accelerate would drop: it applies FSDP to multi-accelerator runs only (accelerate/state.py), so a CPU
    run with an FSDP config would silently train with DDP. Before any model loads."""
    _ = args.device  # the process group, as the trainer would set it up
    if requested_backend(args) != "fsdp":
        return
    from accelerate import PartialState

    distributed = str(PartialState().distributed_type).split(".")[-1]
    if distributed not in FSDP_CAPABLE:
        raise RecipeError(
            f"{_where(args, 'fsdp', section)} asks for FSDP, but accelerate set up {distributed} here (no GPU): "
            "it shards with FSDP on GPUs only and would silently train with DDP; use DeepSpeed on CPU "
            "(recipes/accelerate/deepspeed_zero3_cpu.yaml) or drop the FSDP setting."
        )


def check_backend(trainer: Any, algorithm: str) -> None:
    """After the trainer exists (its ``Accelerator`` decided the backend): the requested backend is the
    one in use, and the algorithm supports it. One :class:`RecipeError` otherwise."""
    args = trainer.args
    backend = requested_backend(args)
    if backend == "deepspeed" and not trainer.is_deepspeed_enabled:
        raise RecipeError(
            f"{_where(args, backend)} asks for DeepSpeed, but accelerate set up "
            f"{trainer.accelerator.distributed_type} without it (is the run launched with accelerate launch "
            "and several processes? on CPU: trainer.ddp_backend: gloo, not use_cpu)."
        )
    if backend == "fsdp" and not trainer.is_fsdp_enabled:
        raise RecipeError(
            f"{_where(args, backend)} asks for FSDP, but accelerate set up {trainer.accelerator.distributed_type} "
            "without it (FSDP needs GPUs)."
        )
    if algorithm == "gumbel" and is_sharded(trainer.accelerator):
        raise RecipeError(
            "gumbel: DeepSpeed ZeRO-3 and FSDP are not supported (the relaxed tokens go through the unwrapped "
            "generator and the encoder's embedding matrix); use DDP or ZeRO-2, or ppo / reinforce."
        )
