"""``model.dtype: auto``: bfloat16 only where the hardware computes in it, the same rule for TRL's ``bf16``,
the choice recorded in the summary; and the machine description every benchmark writes. The CPU's flags
are injected, so each case runs on any machine."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gan_rl.cli.recipe import parse_recipe
from gan_rl.cli.trl_config import build_sft_config, build_trainer_config, with_resolved_dtype
from gan_rl.utils import hardware
from gan_rl.utils.hardware import cpu_native_bf16, machine_info, read_cpu_flags, resolve_precision

EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse sse2 avx avx2 fma\n\n"
SAPPHIRE = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU part\t: 0xd40\n"

NATIVE, EMULATED = {"avx512_bf16"}, {"avx2"}


@pytest.fixture(autouse=True)
def cpu_only(monkeypatch):
    """Every case as on a machine without a GPU (CI's), whatever this one has."""
    monkeypatch.setattr(hardware, "uses_cuda", lambda use_cpu=False: False)
    # PyTorch's own kernels as the flags say (ATEN_CPU_CAPABILITY=avx2 would cap them: tested below).
    monkeypatch.setattr(hardware, "_cpu_capability", lambda: "AVX512")
    hardware._warn_once.cache_clear()
    hardware._info_once.cache_clear()


@pytest.mark.parametrize(
    ("text", "native", "model"),
    [(EPYC, False, "AMD EPYC"), (SAPPHIRE, True, "Intel Xeon"), (GRAVITON, True, None)],
    ids=["epyc", "xeon", "graviton"],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, text, native, model):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    found, evidence = cpu_native_bf16(read_cpu_flags(path))
    assert found is native
    assert ("bf16" in evidence) and (("no " in evidence) is not native)
    # Arm's cpuinfo names no model: the platform's name instead, never an empty string.
    assert hardware.cpu_model(path) == model if model else hardware.cpu_model(path)


def test_avx2_kernels_on_an_avx512_bf16_cpu_mean_emulated(monkeypatch):
    """``ATEN_CPU_CAPABILITY=avx2`` (tests/README.md: the other kind of CPU, on this one): PyTorch emulates
    bfloat16 whatever the flags say, so auto takes float32."""
    monkeypatch.setattr(hardware, "read_cpu_flags", lambda path=hardware.CPUINFO: {"avx512f", "avx512_bf16"})
    monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(hardware, "_cpu_capability", lambda: "AVX512")
    assert cpu_native_bf16() == (True, "the CPU has avx512_bf16")
    monkeypatch.setattr(hardware, "_cpu_capability", lambda: "AVX2")
    native, evidence = cpu_native_bf16()
    assert not native and "AVX2 kernels" in evidence
    assert resolve_precision("auto").dtype == "float32"


def test_unreadable_flags_mean_float32(tmp_path, monkeypatch):
    """No /proc/cpuinfo (macOS, a container without it): the flags are unknown, so auto takes float32."""
    assert read_cpu_flags(tmp_path / "missing") is None
    monkeypatch.setattr(hardware, "read_cpu_flags", lambda path=hardware.CPUINFO: None)
    chosen = resolve_precision("auto", full_weights=False)
    assert chosen.dtype == "float32" and "could not be read" in chosen.reason
    found, evidence = cpu_native_bf16(set())
    assert not found and "emulated" in evidence


def test_auto_picks_bfloat16_only_where_native_and_never_autocasts_on_cpu():
    lora_native = resolve_precision("auto", full_weights=False, cpu_flags=NATIVE)
    assert (lora_native.dtype, lora_native.bf16) == ("bfloat16", False)
    assert "avx512_bf16" in lora_native.reason
    lora_emulated = resolve_precision("auto", full_weights=False, cpu_flags=EMULATED)
    assert (lora_emulated.dtype, lora_emulated.bf16) == ("float32", False)
    assert "emulated" in lora_emulated.reason
    # Every weight trained: float32 weights even where bfloat16 is native (AdamW steps would round away).
    full_native = resolve_precision("auto", full_weights=True, cpu_flags=NATIVE)
    assert (full_native.dtype, full_native.bf16) == ("float32", False)
    assert "full fine-tuning" in full_native.reason


def test_on_a_bf16_gpu_auto_trains_under_bf16_autocast(monkeypatch):
    monkeypatch.setattr(hardware, "uses_cuda", lambda use_cpu=False: not use_cpu)
    monkeypatch.setattr(hardware, "cuda_native_bf16", lambda: True)
    assert resolve_precision("auto").bf16 and resolve_precision("auto").dtype == "bfloat16"
    full = resolve_precision("auto", full_weights=True)
    assert (full.dtype, full.bf16) == ("float32", True)  # mixed precision: float32 master weights
    assert not resolve_precision("auto", use_cpu=True, cpu_flags=EMULATED).bf16
    monkeypatch.setattr(hardware, "cuda_native_bf16", lambda: False)  # e.g. a T4: no bf16, no float16 either
    assert (resolve_precision("auto").dtype, resolve_precision("auto").bf16) == ("float32", False)


def test_explicit_bfloat16_on_an_emulating_cpu_runs_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="gan_rl.utils.hardware"):
        for _ in range(3):
            chosen = resolve_precision("bfloat16", cpu_flags=EMULATED)
    assert chosen.dtype == "bfloat16" and chosen.reason.startswith("set in the recipe")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "30x slower" in warnings[0] and "model.dtype: auto" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gan_rl.utils.hardware"):
        resolve_precision("bfloat16", cpu_flags=NATIVE)
        resolve_precision("float32", cpu_flags=EMULATED)
    assert not caplog.records


def minimal(**model) -> dict:
    return {
        "model": {"name_or_path": "org/model", **model},
        "data": {"train": {"synthetic": "quickstart"}},
        "trainer": {"output_dir": "out", "report_to": "none"},
    }


@pytest.mark.parametrize("flags", [NATIVE, EMULATED], ids=["native", "emulated"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_trl_bf16_follows_the_weights_when_unset(monkeypatch, flags, lora):
    """TRL turns bf16 on by default, which transformers refuses on a machine without a GPU: unset, it now
    follows the rule (off on a CPU), so a recipe for a CPU needs no 'bf16: false'."""
    monkeypatch.setattr(hardware, "read_cpu_flags", lambda path=hardware.CPUINFO: set(flags))
    recipe = parse_recipe(minimal(**({"lora": {"r": 4}} if lora else {})))
    assert build_trainer_config(recipe, "ppo").bf16 is False
    assert build_trainer_config(recipe, "reinforce").bf16 is False
    assert build_sft_config(recipe).bf16 is False
    resolved, precision = with_resolved_dtype(recipe)
    expected = "bfloat16" if (flags is NATIVE and lora) else "float32"
    assert resolved.model.dtype == precision.dtype == expected
    assert recipe.model.dtype == "auto"  # the recipe itself is left as written


def test_a_gpu_that_only_emulates_bfloat16_is_not_native(monkeypatch):
    """torch.cuda.is_bf16_supported() says True on a T4 or V100 by default (it can hold bf16 tensors):
    asked without emulation, as here, it says False."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert hardware.cuda_native_bf16() is False


def test_an_explicit_bf16_is_kept(monkeypatch):
    monkeypatch.setattr(hardware, "uses_cuda", lambda use_cpu=False: not use_cpu)
    monkeypatch.setattr(hardware, "cuda_native_bf16", lambda: True)
    raw = minimal(lora={"r": 4})
    raw["trainer"]["bf16"] = False
    assert build_trainer_config(parse_recipe(raw), "ppo", use_cpu=True).bf16 is False


def test_the_summary_records_the_dtype_and_why(tmp_path, recipe_factory):
    from gan_rl.cli.recipe import load_recipe
    from gan_rl.cli.sft import run_sft
    from gan_rl.cli.train import run

    path = recipe_factory(trainer={"max_steps": 1}, sft={"max_steps": 1, "report_to": "none"})
    summary = run("ppo", load_recipe(path), num_samples=0, progress=False)
    saved = json.loads((Path(summary.output_dir) / "run_summary.json").read_text())
    assert saved["dtype"] == "float32"  # a tiny model trained in full: float32 on every machine
    assert saved["dtype_reason"].startswith("auto: ") and "CPU" in saved["dtype_reason"]
    sft = run_sft(load_recipe(path))
    saved = json.loads((Path(sft.output_dir) / "run_summary.json").read_text())
    assert saved["dtype"] == "float32" and saved["dtype_reason"].startswith("auto: ")


def test_machine_info_names_the_cpu_and_versions():
    info = machine_info()
    for key in ("cpu", "cores", "cpu_native_bf16", "torch", "transformers"):
        assert info[key] is not None, key
    line = hardware.describe_machine(info)
    assert info["cpu"] in line and "bf16" in line and info["torch"] in line
