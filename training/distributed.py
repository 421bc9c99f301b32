"""Process group set-up and model wrapping (DDP or FSDP2)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # whether we created the process group (and must destroy it)


def setup(collective_timeout_seconds: int) -> Dist:
    """Join the job torchrun / Flyte Elastic started, or make a 1-process group.

    NCCL on CUDA, gloo on CPU. The timeout bounds every collective, so a dead or hung rank
    fails the job instead of blocking it forever.
    """
    use_cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device, False)
    timeout = timedelta(seconds=collective_timeout_seconds)
    backend = "nccl" if use_cuda else "gloo"
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend=backend, timeout=timeout)
    else:
        dist.init_process_group(
            backend=backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout
        )
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device, True)


def teardown(info: Dist) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, parallelism: str, info: Dist) -> torch.nn.Module:
    """DDP replicates; FSDP2 shards each decoder layer, then the root (embeddings, head).

    A 1-process DDP job runs the bare model: the math is the same without the wrapper."""
    model.to(info.device)
    if parallelism == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:  # type: ignore[union-attr]
            fully_shard(layer)
        fully_shard(model)
        return model
    if info.world_size == 1:
        return model  # nothing to synchronise; DDP would only add a 1-rank all-reduce
    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_mean(value: float, info: Dist) -> float:
    tensor = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world_size
