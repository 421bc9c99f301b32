"""No code runs from a checkpoint store: resume unpickles only checkpoints this installation
sealed (a MAC by a key outside the store), and only the bytes it checked.

The attack: whoever can write the checkpoint directory or bucket plants a step whose DCP
`.metadata` (a pickle) runs code when loaded, with a manifest whose digests match, since the
manifest sits beside the files. One rank, gloo, a tiny linear model (seconds); the object-store
case runs against a real S3 API (moto on loopback).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from common.errors import StageError
from common.settings import load_settings
from tests.training.conftest import moto_s3
from training import checkpoint as ckpt
from training.checkpoint import (
    MANIFEST,
    CheckpointManager,
    Provenance,
    step_dir_name,
    verify_checkpoint,
)
from training.checkpoint_trust import KEY_FILE
from training.storage import ObjectStore

pytestmark = pytest.mark.unit

UNTRUSTED = "TRAIN_CHECKPOINT_UNTRUSTED"

PROVENANCE = Provenance("c" * 64, {"lr": 1}, {"train.jsonl": "d" * 64})


@pytest.fixture
def one_rank_group() -> Iterator[None]:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


class _RunsCode:
    """Unpickling this writes `marker`: what a planted `.metadata` does to the loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def _model_and_optimizer(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def _state(step: int) -> dict:
    return {"step": step, **PROVENANCE.as_train_state()}


def _plant(root: Path, genuine: Path, step: int, marker: Path, *, mac: str | None) -> Path:
    """A copy of `genuine` as `step`, its `.metadata` replaced by code, and a manifest whose
    digests all match (what anyone with write access to the store can produce)."""
    planted = root / step_dir_name(step)
    shutil.copytree(genuine, planted)
    (planted / ".metadata").write_bytes(pickle.dumps(_RunsCode(marker)))
    manifest = json.loads((planted / MANIFEST).read_text())
    manifest["step"] = step
    manifest["files"] = {name: hashlib.sha256((planted / name).read_bytes()).hexdigest()
                         for name in manifest["files"]}
    manifest["sizes"] = {name: (planted / name).stat().st_size for name in manifest["files"]}
    manifest.pop("mac", None)
    if mac is not None:
        manifest["mac"] = mac
    (planted / MANIFEST).write_text(json.dumps(manifest))
    assert verify_checkpoint(planted) is None  # consistent: the digests alone cannot tell
    return planted


@pytest.mark.parametrize("mac", [None, "0" * 64], ids=["no-mac", "forged-mac"])
def test_a_planted_checkpoint_whose_metadata_runs_code_is_refused_before_unpickling(
    one_rank_group: None, tmp_path: Path, mac: str | None,
) -> None:
    model, optimizer = _model_and_optimizer()
    root = tmp_path / "checkpoints"
    CheckpointManager(root, keep=3, use_async=False).save(1, model, optimizer, _state(1))
    marker = tmp_path / "marker"
    planted = _plant(root, root / step_dir_name(1), 2, marker, mac=mac)

    with pytest.raises(StageError) as refused:
        CheckpointManager(root, keep=3, use_async=False).load_latest(
            model, optimizer, PROVENANCE)
    assert refused.value.code == UNTRUSTED
    assert str(planted) in str(refused.value) and "fresh train.checkpoint_dir" in str(
        refused.value)
    assert not marker.exists()  # the pickle was never opened


def test_a_genuine_checkpoint_resumes_exactly_and_is_sealed_with_a_private_key(
    one_rank_group: None, tmp_path: Path,
) -> None:
    model, optimizer = _model_and_optimizer()
    root = tmp_path / "checkpoints"
    manager = CheckpointManager(root, keep=2, use_async=False)
    manager.save(3, model, optimizer, _state(3))
    manifest = json.loads((root / step_dir_name(3) / MANIFEST).read_text())
    assert manifest["format"] == 3 and len(manifest["mac"]) == 64
    key = load_settings().keys_dir / KEY_FILE
    assert key.stat().st_mode & 0o077 == 0  # only its owner reads it
    assert not key.is_relative_to(root)  # never beside the checkpoints

    fresh, fresh_optimizer = _model_and_optimizer(seed=1)
    state = CheckpointManager(root, keep=2, use_async=False).load_latest(
        fresh, fresh_optimizer, PROVENANCE)
    assert state is not None and state["step"] == 3
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_a_file_swapped_after_the_check_is_refused_on_the_rank_that_reads_it(
    one_rank_group: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rank 0 checks the MAC and digests, then every rank reads the files: a `.metadata`
    replaced in between is caught by the reader, which unpickles only the bytes it hashed."""
    model, optimizer = _model_and_optimizer()
    CheckpointManager(tmp_path, keep=2, use_async=False).save(4, model, optimizer, _state(4))
    marker = tmp_path.parent / f"{tmp_path.name}-marker"
    real_check = ckpt.check_bound

    def check_then_swap(path: Path, *args: object) -> dict[str, str]:
        digests = real_check(path, *args)  # type: ignore[arg-type]
        (Path(path) / ".metadata").write_bytes(pickle.dumps(_RunsCode(marker)))
        return digests

    monkeypatch.setattr(ckpt, "check_bound", check_then_swap)
    with pytest.raises(StageError) as refused:
        CheckpointManager(tmp_path, keep=2, use_async=False).load_latest(
            model, optimizer, PROVENANCE)
    assert refused.value.code == UNTRUSTED and ".metadata" in str(refused.value)
    assert not marker.exists()


def test_an_unbound_checkpoint_is_refused_without_the_key_with_another_key_or_unsealed(
    one_rank_group: None, tmp_path: Path,
) -> None:
    model, optimizer = _model_and_optimizer()
    root = tmp_path / "checkpoints"
    CheckpointManager(root, keep=2, use_async=False).save(5, model, optimizer, _state(5))
    key = load_settings().keys_dir / KEY_FILE

    def refusal(**kwargs: Path) -> str:
        with pytest.raises(StageError) as refused:
            CheckpointManager(root, keep=2, use_async=False, **kwargs).load_latest(
                model, optimizer, PROVENANCE)
        assert refused.value.code == UNTRUSTED
        return str(refused.value)

    assert "no checkpoint key at" in refusal(key_path=tmp_path / "absent.key")
    other = tmp_path / "other.key"
    other.write_text("ab" * 32)
    assert "does not match the key" in refusal(key_path=other)
    # a format-2 manifest (before binding) still verifies as intact, but is not trusted
    manifest_path = root / step_dir_name(5) / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({k: v for k, v in manifest.items() if k != "mac"}
                                        | {"format": 2}))
    assert verify_checkpoint(root / step_dir_name(5)) is None
    assert "carries no MAC" in refusal()
    # a genuine manifest copied under another step name is a replay
    manifest_path.write_text(json.dumps(manifest))
    shutil.copytree(root / step_dir_name(5), root / step_dir_name(6))
    assert "sealed for step 5, not 6" in refusal()
    assert key.is_file()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from s3fs import S3FileSystem

    # fsspec caches filesystems by arguments, not by AWS_ENDPOINT_URL: a cached one would
    # still point at another module's (stopped) endpoint, or this one at theirs.
    S3FileSystem.clear_instance_cache()
    with moto_s3("trust") as endpoint:
        yield endpoint
    S3FileSystem.clear_instance_cache()


def test_a_planted_s3_checkpoint_is_refused_before_unpickling(
    one_rank_group: None, tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint
                        }.items():
        monkeypatch.setenv(name, value)
    root = "s3://trust/run"
    model, optimizer = _model_and_optimizer()
    CheckpointManager(root, keep=3, use_async=False).save(1, model, optimizer, _state(1))
    local = tmp_path / "genuine"
    store = ObjectStore(root)
    for name in store.files(step_dir_name(1)):
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(store.read_bytes(step_dir_name(1), name))
    marker = tmp_path / "marker"
    planted = _plant(tmp_path / "planted", local, 2, marker, mac=None)
    for path in planted.rglob("*"):
        if path.is_file() and path.name != MANIFEST:
            store.write_bytes(path.read_bytes(), step_dir_name(2), path.name)
    store.write_bytes((planted / MANIFEST).read_bytes(), step_dir_name(2), MANIFEST)
    store.refresh()

    with pytest.raises(StageError) as refused:
        CheckpointManager(root, keep=3, use_async=False).load_latest(
            model, optimizer, PROVENANCE)
    assert refused.value.code == UNTRUSTED and step_dir_name(2) in str(refused.value)
    assert not marker.exists()
    # the genuine step still resumes once the planted one is removed
    store.remove_tree(step_dir_name(2), first=MANIFEST)
    state = CheckpointManager(root, keep=3, use_async=False).load_latest(
        model, optimizer, PROVENANCE)
    assert state is not None and state["step"] == 1
