"""Multi-node settings and checkpoints on an object store, in-process (seconds).

The S3 endpoint is real (moto in server mode on loopback, started here): s3fs and DCP's fsspec
writer/reader talk HTTP to it exactly as they would to S3."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist

from common.errors import StageError
from tests.training.conftest import moto_s3
from training import distributed
from training.checkpoint import (
    MANIFEST,
    CheckpointManager,
    Provenance,
    list_checkpoints,
    step_dir_name,
    verify_checkpoint,
)
from training.config import TrainConfig
from training.storage import ObjectStore, is_object_store_uri

BUCKET = "ckpt-unit"


# -- config ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "message"), [
    ({"nnodes": 2}, "train.checkpoint_dir=None: must be an object-store URI"),
    ({"nnodes": 2, "checkpoint_dir": "/mnt/shared/ckpt"},
     "train.checkpoint_dir='/mnt/shared/ckpt': must be an object-store URI"),
    ({"nnodes": 2, "checkpoint_dir": "file:///mnt/ckpt"}, "train.checkpoint_dir='file:///mnt"),
    ({"nnodes": 0}, "train.nnodes=0: must be > 0"),
    ({"nproc_per_node": 0}, "train.nproc_per_node=0: must be > 0"),
    ({"nproc_per_node": 3}, "multiple of world_size x micro_batch_size = 24"),
    ({"parallelism": "zero3"}, "must be one of \\['ddp', 'fsdp', 'hsdp'\\]"),
    ({"nccl_debug": "LOUD"}, "train.nccl_debug='LOUD': must be one of"),
    ({"nccl_async_error_handling": 7}, "train.nccl_async_error_handling=7: must be 0, 1, 2"),
    ({"nccl_socket_ifname": " "}, "train.nccl_socket_ifname=' ': must name an interface"),
    ({"rdzv_join_timeout_seconds": 0}, "train.rdzv_join_timeout_seconds=0: must be > 0"),
    ({"rdzv_last_call_timeout_seconds": 900},
     "train.rdzv_last_call_timeout_seconds=900: must be <= rdzv_join_timeout_seconds=600"),
])
@pytest.mark.unit
def test_bad_multinode_settings_name_the_key_and_the_fix(overrides: dict, message: str) -> None:
    with pytest.raises(StageError, match=message) as caught:
        TrainConfig(**overrides)
    assert caught.value.code == "CONFIG_INVALID"


@pytest.mark.unit
def test_nccl_and_rendezvous_settings_become_the_launchers_and_ncclS_variables() -> None:
    config = TrainConfig(nnodes=2, nproc_per_node=8, global_batch_size=256,
                         checkpoint_dir="s3://b/p", nccl_socket_ifname="eth0",
                         nccl_ib_disable=True, nccl_debug="WARN", nccl_async_error_handling=1,
                         rdzv_join_timeout_seconds=120, rdzv_last_call_timeout_seconds=5)
    assert config.nccl_environment() == {
        "NCCL_SOCKET_IFNAME": "eth0", "NCCL_IB_DISABLE": "1", "NCCL_DEBUG": "WARN",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}
    assert config.rdzv_configs() == {"join_timeout": 120, "last_call_timeout": 5,
                                     "close_timeout": 30}
    assert TrainConfig().nccl_environment() == {}  # unset: the node's environment stands


@pytest.mark.unit
def test_object_store_uris_are_told_from_local_paths() -> None:
    assert is_object_store_uri("s3://bucket/prefix") and is_object_store_uri("gs://b/p")
    for local in (None, "", "/mnt/ckpt", "ckpt", "file:///mnt/ckpt", "local:///x"):
        assert not is_object_store_uri(local)


# -- topology and the HSDP mesh (one gloo rank) ------------------------------------------------

@pytest.fixture
def one_rank() -> Iterator[distributed.Dist]:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield distributed.Dist(0, 1, 0, torch.device("cpu"), True, 1)
    finally:
        dist.destroy_process_group()


def _dist(world: int, local: int) -> distributed.Dist:
    return distributed.Dist(0, world, 0, torch.device("cpu"), False, local)


@pytest.mark.unit
def test_the_launchers_nodes_and_processes_must_be_the_configs() -> None:
    two_nodes = TrainConfig(nnodes=2, nproc_per_node=1, checkpoint_dir="s3://b/p")
    distributed.check_topology(two_nodes, _dist(world=2, local=1))
    distributed.check_topology(TrainConfig(), _dist(world=2, local=2))  # one node, 2 procs
    with pytest.raises(StageError, match=r"train.nnodes=1, train.nproc_per_node=None: the "
                       r"launcher started 2 processes, 1 per node \(2 nodes\)"):
        distributed.check_topology(TrainConfig(), _dist(world=2, local=1))
    with pytest.raises(StageError, match=r"train\.nnodes=2, train\.nproc_per_node=1"):
        distributed.check_topology(two_nodes, _dist(world=4, local=2))


@pytest.mark.integration
def test_hsdp_mesh_replicates_over_nodes_and_shards_within_one(
    one_rank: distributed.Dist,
) -> None:
    mesh = distributed.hsdp_mesh(one_rank, nnodes=1)
    assert mesh.mesh_dim_names == ("replicate", "shard")
    assert tuple(mesh.shape) == (1, 1)
    with pytest.raises(StageError, match=r"train\.nnodes=2 does not divide the world size 1"):
        distributed.hsdp_mesh(one_rank, nnodes=2)


# -- checkpoints on a real S3 endpoint ---------------------------------------------------------

@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture
def s3_root(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch,
            request: pytest.FixtureRequest) -> str:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    return f"s3://{BUCKET}/{request.node.name}"


def _model_and_optimizer(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


PROVENANCE = Provenance("c" * 64, {"lr": 1}, {"train.jsonl": "d" * 64})


def _state(step: int) -> dict:
    return {"step": step, **PROVENANCE.as_train_state()}


@pytest.mark.integration
def test_s3_checkpoints_are_sealed_pruned_and_restored_exactly(
    one_rank: distributed.Dist, s3_root: str,
) -> None:
    model, optimizer = _model_and_optimizer()
    manager = CheckpointManager(s3_root, keep=2, use_async=False)
    for step in (1, 2, 3):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)
        manager.save(step, model, optimizer, _state(step))
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    assert [s for s, _ in list_checkpoints(s3_root)] == [3, 2]  # keep=2, step 1 pruned
    newest = f"{s3_root}/{step_dir_name(3)}"
    assert verify_checkpoint(newest) is None
    manifest = json.loads(ObjectStore(newest).read_bytes(MANIFEST))
    assert manifest["hashed_by_rank"]["0"] and ".metadata" in manifest["files"]

    fresh, fresh_optimizer = _model_and_optimizer(seed=1)
    state = CheckpointManager(s3_root, keep=2, use_async=False).load_latest(
        fresh, fresh_optimizer, PROVENANCE)
    assert state is not None and state["step"] == 3
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


@pytest.mark.integration
def test_a_corrupt_s3_checkpoint_is_skipped_and_an_unsealed_one_removed_at_start(
    one_rank: distributed.Dist, s3_root: str,
) -> None:
    model, optimizer = _model_and_optimizer()
    manager = CheckpointManager(s3_root, keep=3, use_async=False)
    manager.save(1, model, optimizer, _state(1))
    manager.save(2, model, optimizer, _state(2))
    store = ObjectStore(s3_root)
    shard = next(n for n in store.files(step_dir_name(2)) if n.endswith(".distcp"))
    data = bytearray(store.read_bytes(step_dir_name(2), shard))
    data[-1] ^= 0xFF  # same size, other bytes: only the sha256 tells
    store.write_bytes(bytes(data), step_dir_name(2), shard)
    assert verify_checkpoint(f"{s3_root}/{step_dir_name(2)}") == f"sha256 mismatch in {shard}"
    store.write_bytes(b"half", step_dir_name(9), "__0_0.distcp")  # an interrupted save

    restarted = CheckpointManager(s3_root, keep=3, use_async=False)
    assert not store.exists(step_dir_name(9))  # no manifest: removed, never loaded
    state = restarted.load_latest(model, optimizer, PROVENANCE)
    assert state is not None and state["step"] == 1
