"""Process group set-up, topology checks and model wrapping (DDP, FSDP2 or HSDP)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.nn.parallel import DistributedDataParallel

from common.errors import StageError
from training.config import TrainConfig


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # whether we created the process group (and must destroy it)
    # processes on this node (torchrun's LOCAL_WORLD_SIZE; the world size without a launcher)
    local_world_size: int = 1


def setup(collective_timeout_seconds: int, nccl_environment: dict[str, str] | None = None
          ) -> Dist:
    """Join the job torchrun / Flyte Elastic started, or make a 1-process group.

    NCCL on CUDA, gloo on CPU. The timeout bounds every collective, so a dead or hung rank
    fails the job instead of blocking it forever. `nccl_environment` (TrainConfig's NCCL
    settings) is exported first: NCCL and torch's NCCL process group read it when the
    group's communicators are created.
    """
    os.environ.update(nccl_environment or {})
    use_cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device, False,
                    _local_world_size())
    timeout = timedelta(seconds=collective_timeout_seconds)
    backend = "nccl" if use_cuda else "gloo"
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend=backend, timeout=timeout)
    else:
        dist.init_process_group(
            backend=backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout
        )
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device, True,
                _local_world_size())


def _local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", str(dist.get_world_size())))


def check_topology(config: TrainConfig, info: Dist) -> None:
    """The launcher's nodes x processes must be the config's: HSDP's mesh, the global batch
    split and the shared-checkpoint rule (train.nnodes > 1) all rely on train.nnodes."""
    nodes, rest = divmod(info.world_size, info.local_world_size)
    expected = config.nnodes * (config.nproc_per_node or info.local_world_size)
    if rest or nodes != config.nnodes or info.world_size != expected:
        raise StageError(
            "CONFIG_INVALID",
            f"train.nnodes={config.nnodes}, train.nproc_per_node={config.nproc_per_node}: the "
            f"launcher started {info.world_size} processes, {info.local_world_size} per node "
            f"({info.world_size / info.local_world_size:g} nodes). Set train.nnodes (and "
            "train.nproc_per_node) to the nodes and processes per node the job runs with "
            "(the workflow's Elastic(nnodes, nproc_per_node) or torchrun's --nnodes/"
            "--nproc-per-node).",
        )


def hsdp_mesh(info: Dist, nnodes: int) -> DeviceMesh:
    """(nnodes, ranks per node) mesh: dim 0 replicates across nodes, dim 1 shards within one.

    torchrun numbers ranks node by node, so each row of the mesh is one node's ranks and the
    shard collectives (all-gather, reduce-scatter) stay on the node's fast links; only the
    gradient all-reduce of dim 0 crosses nodes."""
    if info.world_size % nnodes:
        raise StageError("CONFIG_INVALID", f"train.nnodes={nnodes} does not divide the world "
                         f"size {info.world_size}: HSDP needs the same ranks on every node.")
    return init_device_mesh(info.device.type, (nnodes, info.world_size // nnodes),
                            mesh_dim_names=("replicate", "shard"))


def teardown(info: Dist) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, parallelism: str, info: Dist, nnodes: int = 1
               ) -> torch.nn.Module:
    """DDP replicates; FSDP2 shards each decoder layer, then the root (embeddings, head);
    HSDP does the same over a 2-D mesh (shard within a node, replicate across nodes).

    A 1-process DDP job runs the bare model: the math is the same without the wrapper."""
    model.to(info.device)
    if parallelism in ("fsdp", "hsdp"):
        from torch.distributed.fsdp import fully_shard

        mesh = hsdp_mesh(info, nnodes) if parallelism == "hsdp" else None
        for layer in _decoder_layers(model):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    if info.world_size == 1:
        return model  # nothing to synchronise; DDP would only add a 1-rank all-reduce
    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The LlamaForCausalLM's decoder layers, also inside a PEFT (LoRA) wrapper."""
    get_base_model = getattr(model, "get_base_model", None)  # peft.PeftModel's accessor
    inner = get_base_model() if callable(get_base_model) else model
    layers = inner.get_submodule("model.layers")  # LlamaForCausalLM.model is the LlamaModel
    assert isinstance(layers, torch.nn.ModuleList)
    return layers


def all_reduce_mean(value: float, info: Dist) -> float:
    tensor = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world_size
