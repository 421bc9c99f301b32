"""Checkpoint durability: what is on disk before older checkpoints go, who hashes what, and
what resume makes of a torn or foreign checkpoint.

The in-process tests use a 1-process gloo group and a tiny linear model (seconds); the
integration tests run the real entry point under torchrun with 2 FSDP ranks, so each rank
writes its own DCP shard and hashes it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from tests.training.conftest import TEST_TRAIN, RankRun, run_ranks
from training import checkpoint as ckpt
from training.checkpoint import (
    MANIFEST,
    CheckpointManager,
    list_checkpoints,
    prune_checkpoints,
    step_dir_name,
    verify_checkpoint,
)

# -- in-process: one rank, a linear model -------------------------------------------------------

@pytest.fixture
def one_rank_group() -> Iterator[None]:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.mark.unit
def test_every_file_and_directory_is_fsynced_before_an_older_checkpoint_is_pruned(
    one_rank_group: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crash right after pruning must still find the new checkpoint on disk: its files,
    its directory and the rename into the parent are all fsynced before anything is removed."""
    model, optimizer = _model_and_optimizer()
    manager = CheckpointManager(tmp_path, keep=1, use_async=False)
    manager.save(1, model, optimizer, {"step": 1})
    events: list[tuple[str, str]] = []
    real_fsync, real_remove = os.fsync, ckpt.retention.remove

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", _fd_path(fd)))
        real_fsync(fd)

    def recording_remove(entries: object, *, dry_run: bool = False) -> list[Path]:
        removed = real_remove(entries, dry_run=dry_run)  # type: ignore[arg-type]
        events.extend(("remove", str(p)) for p in removed)
        return removed

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(ckpt.retention, "remove", recording_remove)
    manager.save(2, model, optimizer, {"step": 2})

    new, old = tmp_path / step_dir_name(2), tmp_path / step_dir_name(1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]  # keep=1 enforced
    removed_at = events.index(("remove", str(old)))
    synced_before = {path for kind, path in events[:removed_at] if kind == "fsync"}
    partial = tmp_path / f".{step_dir_name(2)}.partial"
    for name in json.loads((new / MANIFEST).read_text())["files"]:
        assert str(partial / name) in synced_before, f"{name} not fsynced before the prune"
    assert str(partial / MANIFEST) in synced_before
    assert str(partial) in synced_before  # the checkpoint directory's entries
    assert str(tmp_path) in synced_before  # the rename into the parent
    last_parent_sync = max(i for i, e in enumerate(events) if e == ("fsync", str(tmp_path)))
    assert last_parent_sync < removed_at
    assert verify_checkpoint(new) is None


@pytest.mark.unit
def test_a_format_1_manifest_still_verifies_and_a_newer_format_is_refused_by_name(
    one_rank_group: None, tmp_path: Path,
) -> None:
    model, optimizer = _model_and_optimizer()
    CheckpointManager(tmp_path, keep=2, use_async=False).save(3, model, optimizer, {"step": 3})
    path = tmp_path / step_dir_name(3)
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["format"] == 3
    # intact, though resume refuses it unbound (no MAC): test_checkpoint_trust.py
    old = {"step": 3, "world_size": 1, "files": manifest["files"]}  # what rank 0 used to write
    (path / MANIFEST).write_text(json.dumps(old))
    assert verify_checkpoint(path) is None
    (path / MANIFEST).write_text(json.dumps({**manifest, "format": 99}))
    reason = verify_checkpoint(path)
    assert reason is not None and "format 99 is newer" in reason


@pytest.mark.unit
def test_a_fresh_checkpoint_is_never_pruned_in_favour_of_a_newer_stale_step(
    one_rank_group: None, tmp_path: Path,
) -> None:
    """After resume skipped a corrupt step 12, the run saves step 8 again: with keep=1 the
    newest-by-step rule alone would delete the only good checkpoint."""
    model, optimizer = _model_and_optimizer()
    manager = CheckpointManager(tmp_path, keep=1, use_async=False)
    manager.save(12, model, optimizer, {"step": 12})
    shard = next((tmp_path / step_dir_name(12)).glob("*.distcp"))
    shard.write_bytes(b"torn")
    manager.save(8, model, optimizer, {"step": 8})
    assert [s for s, _ in list_checkpoints(tmp_path)] == [12, 8]
    assert verify_checkpoint(tmp_path / step_dir_name(8)) is None
    # gc (no protection) applies the plain rule; idempotent
    assert prune_checkpoints(tmp_path, 1).removed == [tmp_path / step_dir_name(8)]
    assert prune_checkpoints(tmp_path, 1).removed == []


@pytest.mark.unit
def test_resaving_a_step_replaces_it_and_a_crash_mid_replace_restores_the_old_one(
    one_rank_group: None, tmp_path: Path,
) -> None:
    model, optimizer = _model_and_optimizer()
    manager = CheckpointManager(tmp_path, keep=2, use_async=False)
    manager.save(4, model, optimizer, {"step": 4, "attempt": 1})
    manager.save(4, model, optimizer, {"step": 4, "attempt": 2})
    final = tmp_path / step_dir_name(4)
    assert json.loads((final / ckpt.TRAIN_STATE).read_text())["attempt"] == 2
    assert sorted(p.name for p in tmp_path.glob("*step-*")) == [final.name]  # old one gone
    # a crash between "move the old one aside" and "rename the new one in"
    os.replace(final, tmp_path / f".{final.name}.replaced")
    CheckpointManager(tmp_path, keep=2, use_async=False)
    assert verify_checkpoint(final) is None


@pytest.mark.unit
def test_an_async_save_is_hashed_by_its_writer_once_the_background_write_ends(
    one_rank_group: None, tmp_path: Path,
) -> None:
    """The CUDA path (dcp.async_save, written in a background thread) seals the same way:
    the shards its writer recorded are hashed by this rank when the save is finalised."""
    model, optimizer = _model_and_optimizer()
    manager = CheckpointManager(tmp_path, keep=1, use_async=True)
    manager.save(5, model, optimizer, {"step": 5})
    assert not (tmp_path / step_dir_name(5)).exists()  # in flight until finalize
    pending = manager._pending
    assert pending is not None and pending.future is not None
    pending.future.result()
    recorded = set(pending.writer.written)  # what the background write reported
    manager.finalize()
    path = tmp_path / step_dir_name(5)
    manifest = json.loads((path / MANIFEST).read_text())
    shards = {p.name for p in path.glob("*.distcp")}
    assert shards and recorded == shards
    assert shards | {"rng-rank0.pt"} <= set(manifest["hashed_by_rank"]["0"])
    assert verify_checkpoint(path) is None


# -- integration: 2 FSDP ranks under torchrun -------------------------------------------------

@pytest.fixture(scope="module")
def fsdp_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fsdp-home")


@pytest.fixture(scope="module")
def fsdp_run(tiny_dataset_dir: Path, fsdp_home: Path,
             tmp_path_factory: pytest.TempPathFactory) -> RankRun:
    run = run_ranks(2, {**TEST_TRAIN, "parallelism": "fsdp"}, tiny_dataset_dir,
                    tmp_path_factory.mktemp("fsdp2"), fsdp_home)
    assert run.returncode == 0, run.output[-3000:]
    return run


@pytest.mark.integration
def test_each_fsdp_rank_hashes_its_own_shards_and_the_manifest_covers_every_file(
    fsdp_run: RankRun,
) -> None:
    checkpoints = list_checkpoints(fsdp_run.checkpoint_dir)
    assert [s for s, _ in checkpoints] == [12, 8]  # keep_checkpoints=2 after steps 4, 8, 12
    for _, location in checkpoints:
        path = Path(location)  # a local checkpoint dir
        manifest = json.loads((path / MANIFEST).read_text())
        on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
        assert set(manifest["files"]) == on_disk - {MANIFEST}
        assert set(manifest["sizes"]) == set(manifest["files"])
        by_rank = manifest["hashed_by_rank"]
        assert sorted(by_rank) == ["0", "1"]
        for rank in (0, 1):
            shards = {n for n in on_disk if n.startswith(f"__{rank}_") and n.endswith(".distcp")}
            assert shards, f"rank {rank} wrote no shard"
            assert shards | {f"rng-rank{rank}.pt"} <= set(by_rank[str(rank)])
        assert {".metadata", ckpt.TRAIN_STATE} <= set(by_rank["0"])
        assert not set(by_rank["0"]) & set(by_rank["1"])
        assert verify_checkpoint(path) is None
    assert not list(fsdp_run.checkpoint_dir.glob(".*"))  # no .partial / .replaced left


@pytest.mark.integration
def test_a_corrupted_shard_of_rank_1_is_detected_and_fsdp_resumes_from_the_step_before(
    tiny_dataset_dir: Path, fsdp_home: Path, tmp_path: Path, fsdp_run: RankRun,
) -> None:
    config = {**TEST_TRAIN, "parallelism": "fsdp"}
    work = tmp_path / "torn"
    work.mkdir()
    shutil.copytree(fsdp_run.checkpoint_dir, work / "checkpoints")
    newest = Path(dict(list_checkpoints(work / "checkpoints"))[12])
    shard = next(newest.glob("__1_*.distcp"))  # written and hashed by rank 1
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit: same size, other bytes
    shard.write_bytes(bytes(data))
    resumed = run_ranks(2, config, tiny_dataset_dir, work, fsdp_home)
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert f"skipping checkpoint {newest}: sha256 mismatch in {shard.name}" in resumed.output
    assert resumed.result is not None and resumed.result["resumed_from_step"] == 8
    assert fsdp_run.result is not None
    assert resumed.result["loss_curve"] == pytest.approx(fsdp_run.result["loss_curve"],
                                                         abs=1e-4)
    reference = load_file(fsdp_run.output_dir / "model.safetensors")
    for name, tensor in load_file(resumed.output_dir / "model.safetensors").items():
        assert torch.allclose(tensor, reference[name], atol=1e-6), f"{name} differs"
    assert verify_checkpoint(newest) is None  # step 12 was written again, whole
