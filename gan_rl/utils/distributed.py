"""Collectives across ``accelerate launch`` processes that are no-ops in a single process.

The adversary runs beside TRL's trainer, outside its ``Accelerator``: every process keeps its own buffer
and discriminator copy, and these few helpers keep them in step (gradient averages, agreed statistics,
checkpoints gathered to the main process) without asking whether ``torch.distributed`` is set up.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the run (1 without ``torch.distributed``)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's index (0 without ``torch.distributed``)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce across processes (a no-op in a single process).

    NCCL reduces CUDA tensors only, so a CPU tensor makes a round trip to this process's GPU there.
    """
    if world_size() > 1:
        reduce_op = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op]
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl"
            else tensor.device
        )
        work = tensor.to(device)
        dist.all_reduce(work, op=reduce_op)
        if work is not tensor:
            tensor.copy_(work)
    return tensor


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every process's ``obj`` on the main process (rank order), None elsewhere; a collective."""
    if world_size() == 1:
        return [obj]
    out: list[Any] | None = [None] * world_size() if rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` on every process (rank order); a collective, ``[obj]`` in one process."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def max_across_ranks(value: int) -> int:
    """The largest ``value`` over all processes (a collective; ``value`` itself in one process).

    The lockstep helper: under ZeRO-3 or FSDP every forward of the generator's weights is itself a
    collective, so a rank that runs fewer of them than the others would leave them waiting (or, worse,
    pair its next collective with their forward). Ranks agree on the count first and pad with dummies.
    """
    if world_size() == 1:
        return value
    return int(all_reduce_(torch.tensor([value], dtype=torch.long), "max").item())
