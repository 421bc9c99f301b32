"""Unit tests: config rules, LR schedule, batch schedule, checkpoint verification."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from common.errors import StageError
from training.checkpoint import (
    MANIFEST,
    Provenance,
    check_provenance,
    list_checkpoints,
    verify_checkpoint,
)
from training.config import TrainConfig
from training.data import BatchSchedule
from training.loop import lr_factor

pytestmark = pytest.mark.unit


def test_lr_warms_up_linearly_then_decays_to_the_floor() -> None:
    config = TrainConfig(max_steps=100, warmup_steps=10, learning_rate=1e-3,
                         min_learning_rate=1e-4)
    factors = [lr_factor(s, config) for s in range(100)]
    assert factors[0] == pytest.approx(0.1)
    assert factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[9:]))
    assert lr_factor(100, config) == pytest.approx(0.1)  # min_lr / lr


def test_each_epoch_visits_every_window_once() -> None:
    schedule = BatchSchedule(num_windows=40, global_batch_size=8, seed=3)
    first_epoch = torch.cat([schedule.global_indices(s) for s in range(5)])
    assert sorted(first_epoch.tolist()) == list(range(40))
    assert not torch.equal(schedule.global_indices(0), schedule.global_indices(5))


def test_batch_of_a_step_is_a_pure_function_of_seed_and_step() -> None:
    a = BatchSchedule(num_windows=37, global_batch_size=8, seed=7)
    b = BatchSchedule(num_windows=37, global_batch_size=8, seed=7)
    assert torch.equal(a.global_indices(11), b.global_indices(11))
    assert not torch.equal(a.global_indices(11),
                           BatchSchedule(37, 8, seed=8).global_indices(11))


def test_ranks_partition_the_global_batch_whatever_the_world_size() -> None:
    schedule = BatchSchedule(num_windows=100, global_batch_size=16, seed=0)
    whole = schedule.global_indices(4).tolist()
    for world in (1, 2, 4):
        parts = [i for r in range(world)
                 for mb in schedule.rank_micro_batches(4, r, world, 4) for i in mb.tolist()]
        assert parts == whole


def test_global_batch_that_does_not_split_over_ranks_is_rejected_with_the_fix() -> None:
    config = TrainConfig(global_batch_size=16, micro_batch_size=8)
    assert config.accumulation_steps(1) == 2
    assert config.accumulation_steps(2) == 1
    with pytest.raises(StageError, match="multiple of world_size x micro_batch_size = 24"):
        config.accumulation_steps(3)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"parallelism": "zero3"}, "train.parallelism='zero3': must be one of"),
    ({"mixed_precision": "fp16"}, "train.mixed_precision='fp16'"),
    ({"model_preset": "huge"}, "train.model_preset='huge'"),
    ({"global_batch_size": 12, "micro_batch_size": 8}, "multiple of micro_batch_size=8"),
    ({"seq_len": 4096}, "exceeds the tiny context"),
    ({"min_learning_rate": 1.0}, "min_learning_rate"),
    ({"max_steps": 0}, "train.max_steps=0: must be > 0"),
])
def test_bad_train_config_names_the_field_and_rule(overrides: dict, message: str) -> None:
    with pytest.raises(StageError, match=message):
        TrainConfig(**overrides)


def _fake_checkpoint(root: Path, step: int) -> Path:
    from common.digests import sha256_file

    path = root / f"step-{step:08d}"
    path.mkdir(parents=True)
    (path / "__0_0.distcp").write_bytes(b"weights" * 10)
    (path / "train_state.json").write_text(json.dumps({"step": step}))
    files = {p.name: sha256_file(p) for p in path.iterdir()}
    (path / MANIFEST).write_text(json.dumps({"step": step, "files": files}))
    return path


def test_checkpoint_verification_catches_each_kind_of_damage(tmp_path: Path) -> None:
    good = _fake_checkpoint(tmp_path, 4)
    assert verify_checkpoint(good) is None

    flipped = _fake_checkpoint(tmp_path, 8)
    (flipped / "__0_0.distcp").write_bytes(b"weightz" * 10)
    assert verify_checkpoint(flipped) == "sha256 mismatch in __0_0.distcp"

    truncated = _fake_checkpoint(tmp_path, 12)
    (truncated / "__0_0.distcp").unlink()
    assert "files missing" in (verify_checkpoint(truncated) or "")

    extra = _fake_checkpoint(tmp_path, 16)
    (extra / "stray.bin").write_bytes(b"x")
    assert "not in the manifest" in (verify_checkpoint(extra) or "")

    unsealed = _fake_checkpoint(tmp_path, 20)
    (unsealed / MANIFEST).unlink()
    assert "no manifest" in (verify_checkpoint(unsealed) or "")

    (tmp_path / ".step-00000024.partial").mkdir()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20, 16, 12, 8, 4]


def _provenance(config: TrainConfig, train_digest: str = "a" * 64) -> Provenance:
    return Provenance(config.digest(), json.loads(config.to_json()),
                      {"train.jsonl": train_digest, "tokenizer": "t" * 64})


def test_resume_under_another_config_is_refused_naming_both_digests_and_the_field() -> None:
    written = _provenance(TrainConfig(max_steps=100))
    now = _provenance(TrainConfig(max_steps=200))
    with pytest.raises(StageError) as caught:
        check_provenance(Path("ckpt/step-00000050"), written.as_train_state(), now)
    assert caught.value.code == "TRAIN_CHECKPOINT_CONFIG_MISMATCH"
    message = str(caught.value)
    assert written.config_digest in message and now.config_digest in message
    assert "['max_steps']" in message and "fresh train.checkpoint_dir" in message


def test_resume_on_another_dataset_or_without_a_recorded_one_is_refused() -> None:
    config = TrainConfig()
    written, now = _provenance(config, "a" * 64), _provenance(config, "b" * 64)
    with pytest.raises(StageError) as caught:
        check_provenance(Path("ckpt"), written.as_train_state(), now)
    assert caught.value.code == "TRAIN_CHECKPOINT_DATASET_MISMATCH"
    assert f"train.jsonl: checkpoint {'a' * 64}, this run {'b' * 64}" in str(caught.value)

    legacy = {"config_digest": config.digest()}  # written before datasets were recorded
    with pytest.raises(StageError) as caught:
        check_provenance(Path("ckpt"), legacy, now)
    assert caught.value.code == "TRAIN_CHECKPOINT_DATASET_MISMATCH"
    check_provenance(Path("ckpt"), now.as_train_state(), now)  # same provenance: resumes
