"""Data-parallel training under torchrun: join the process group (NCCL on GPUs, Gloo on CPUs) and say which
device, rank and world size this process has. Without torchrun it is one process on the chosen device."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from cramcli.utils.device import enable_fast_math, resolve_device, setup_device


@contextlib.contextmanager
def process_group(device: str | None, gpu: int | None) -> Iterator[tuple[torch.device, int, int]]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield setup_device(device, gpu), 0, 1
        return
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, None)
    if dev.type == "cuda":  # one GPU per process: torchrun's LOCAL_RANK picks it
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    enable_fast_math(dev)
    try:
        yield dev, rank, world
    finally:
        dist.destroy_process_group()


def barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def all_reduce_max(values: list[float], device: torch.device, world: int) -> list[float]:
    """The element-wise maximum over ranks (a tensor on the device for NCCL; no GPU sync when alone)."""
    if world == 1:
        return values
    shared = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(shared, op=torch.distributed.ReduceOp.MAX)
    return shared.tolist()


def mean_over_ranks(value: torch.Tensor, world: int) -> torch.Tensor:
    if world == 1:
        return value
    value = value.clone()
    torch.distributed.all_reduce(value)
    return value / world
