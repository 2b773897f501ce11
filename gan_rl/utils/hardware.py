"""What the machine can do: native bfloat16, the dtype ``model.dtype: auto`` picks, and a description of
the machine for every measured figure.

Why this matters: bfloat16 halves memory and is fast only where the hardware computes in it: a CUDA device
with bf16 support, or a CPU with AVX512-BF16 or AMX. Elsewhere PyTorch emulates it, and on a 2-core AMD EPYC
without AVX512 a LoRA training step of SmolLM2-135M ran 30x slower in bfloat16 than in float32 (generation
2.5x slower; ``benchmarks/dtype_speed.py``), where a CPU with AVX512-BF16 ran the same step 2.2x *faster*. A
recipe that hard-codes the dtype is therefore tuned for one machine; ``auto`` decides per machine, and the
decision and its reason go into the logs and ``run_summary.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# CPU flags (Linux /proc/cpuinfo) that mean bfloat16 matrix arithmetic in hardware: x86's AVX512-BF16 and
# AMX, and Arm's BF16 extension (``bf16`` in the Features line; Graviton 3, Neoverse V1 and later).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
CPUINFO = Path("/proc/cpuinfo")

# Measured on a 2-core AMD EPYC without AVX512 (2026-12-03, torch 2.13): bfloat16 against float32 for
# SmolLM2-135M-Instruct, LoRA r16 (``python benchmarks/dtype_speed.py``); quoted by the warning below.
EMULATED_BF16_SLOWDOWN = "a LoRA training step 30x slower and generation 2.5x slower than float32"


@dataclasses.dataclass(frozen=True)
class Precision:
    """The dtype a run uses and why: ``dtype`` for the weights (``model.dtype``), ``bf16`` for TRL's
    mixed-precision flag when the recipe leaves it unset."""

    dtype: str  # "float32" | "bfloat16" | "float16"
    reason: str
    bf16: bool  # the default of trainer.bf16 / sft.bf16: autocast to bfloat16 (on a GPU only, see below)

    def as_dict(self) -> dict[str, str]:
        return {"dtype": self.dtype, "dtype_reason": self.reason}


def read_cpu_flags(path: Path = CPUINFO) -> set[str] | None:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``), or None where they cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_model(path: Path = CPUINFO) -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("model name", "cpu model", "hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_native_bf16(flags: set[str] | None = None) -> tuple[bool, str]:
    """(whether the CPU computes bfloat16 in hardware, the evidence in words).

    Read from the CPU's flags; on x86 PyTorch must also run its AVX512 kernels: with
    ``ATEN_CPU_CAPABILITY=avx2`` (how a CPU without AVX512 is imitated on one with it) it emulates
    bfloat16 like such a CPU does. ``flags`` given (tests): the flags alone decide.
    """
    capped = None
    if flags is None:
        flags = read_cpu_flags()
        capability = _cpu_capability()
        if capability in ("AVX2", "DEFAULT") and platform.machine().lower() in ("x86_64", "amd64"):
            capped = capability
    if flags is None:
        return False, "the CPU's flags could not be read (no /proc/cpuinfo)"
    found = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if found and capped:
        return (
            False,
            f"the CPU has {'/'.join(found)} but PyTorch runs its {capped} kernels (bfloat16 emulated)",
        )
    if found:
        return True, f"the CPU has {'/'.join(found)}"
    return False, "the CPU has no avx512_bf16, amx_bf16 or bf16 flag (bfloat16 would be emulated)"


def cuda_native_bf16() -> bool:
    import torch

    # including_emulation=False: by default torch answers True on a GPU that only emulates bfloat16
    # (a T4 or V100: it can hold bf16 tensors), exactly the case auto must avoid.
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))


def uses_cuda(use_cpu: bool = False) -> bool:
    """Whether a run with TrainingArguments' ``use_cpu`` runs on a CUDA device."""
    import torch

    return bool(torch.cuda.is_available() and not use_cpu)


def resolve_precision(
    requested: str = "auto",
    *,
    use_cpu: bool = False,
    full_weights: bool = False,
    cpu_flags: set[str] | None = None,
) -> Precision:
    """The dtype for ``model.dtype: requested`` on this machine, with its reason.

    ``auto``: bfloat16 where the hardware runs it natively (a CUDA device with bf16 support; a CPU whose
    flags show avx512_bf16, amx_bf16 or Arm's bf16), float32 otherwise; float16 never by default (it needs
    loss scaling). One exception, ``full_weights`` (every weight trained, no LoRA): the weights stay
    float32, because AdamW steps smaller than bfloat16's resolution (1/256 of a weight) round away in
    bfloat16 weights; on a CUDA device the computation still runs in bfloat16 under autocast (mixed
    precision, ``bf16`` below). LoRA adapters are float32 beside bfloat16 base weights (PEFT's default).
    An explicit dtype is kept; bfloat16 on a CPU that would emulate it gets one warning that names the
    measured slowdown.

    ``bf16`` (the default of ``trainer.bf16``/``sft.bf16``): True only on a CUDA device with native
    bfloat16 and bfloat16 compute (bfloat16 weights, or ``auto`` with full weights), as TRL trains there.
    On a CPU the weights compute in their own dtype, and transformers refuses bf16 autocast there without
    ``use_cpu``; so float32 weights are never autocast to an emulated bfloat16.
    """
    on_cuda = uses_cuda(use_cpu)
    if on_cuda:
        native = cuda_native_bf16()
        device = "the CUDA device"
        evidence = f"{device} {'supports' if native else 'does not support'} bfloat16"
    else:
        native, evidence = cpu_native_bf16(cpu_flags)
        device = "the CPU"
    if requested == "auto" and native and full_weights:
        dtype = "float32"
        compute = "bfloat16 autocast (trainer.bf16)" if on_cuda else "float32 compute"
        reason = (
            f"auto: {evidence}, but full fine-tuning keeps float32 weights (AdamW steps below bfloat16's "
            f"resolution would round away); {compute}"
        )
        return Precision(dtype=dtype, reason=reason, bf16=on_cuda)
    if requested == "auto":
        dtype = "bfloat16" if native else "float32"
        reason = f"auto: {evidence}"
    else:
        dtype = requested
        reason = f"set in the recipe ({evidence})"
        if dtype == "bfloat16" and not native and not on_cuda:
            _warn_once(
                f"model.dtype: bfloat16 on {device} without native bfloat16 ({evidence}): measured "
                f"{EMULATED_BF16_SLOWDOWN} on such a CPU; model.dtype: auto picks float32 here."
            )
    return Precision(dtype=dtype, reason=reason, bf16=dtype == "bfloat16" and on_cuda)


def log_precision(precision: Precision) -> None:
    """Log the choice once per process (a run resolves it in several places)."""
    _info_once(f"model.dtype: {precision.dtype} ({precision.reason}).")


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning(message)


@functools.cache
def _info_once(message: str) -> None:
    logger.info(message)


def machine_info() -> dict[str, Any]:
    """The machine a figure was measured on: CPU model, cores, native bfloat16, GPU, library versions.

    Every benchmark writes this beside its results, because speeds (and which dtype is faster) differ
    by an order of magnitude between CPUs with and without native bfloat16.
    """
    import torch
    import transformers

    native, evidence = cpu_native_bf16()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_native_bf16": native,
        "cpu_bf16_evidence": evidence,
        "cpu_capability": _cpu_capability(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        import trl

        info["trl"] = trl.__version__
    except ImportError:
        pass
    return info


def describe_machine(info: dict[str, Any] | None = None) -> str:
    """One line for a report: ``AMD EPYC, 2 cores, no native bf16 (AVX2), torch 2.13.0, transformers 5.2``."""
    info = info or machine_info()
    bf16 = "native bf16" if info.get("cpu_native_bf16") else "no native bf16"
    capability = f" ({info['cpu_capability']})" if info.get("cpu_capability") else ""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return (
        f"{info['cpu']}, {info['cores']} cores, {bf16}{capability}{gpu}, torch {info['torch']}, "
        f"transformers {info['transformers']}"
    )


def _cpu_capability() -> str | None:
    """PyTorch's own reading of the CPU's vector width (``AVX2``, ``AVX512``, ``DEFAULT``)."""
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return None
