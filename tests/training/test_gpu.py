"""GPU-only: bf16 autocast, torch.compile, async DCP checkpoints, MFU. Skipped without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.training.conftest import TEST_TRAIN, run_ranks
from training.checkpoint import list_checkpoints, verify_checkpoint

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_bf16_compiled_run_reports_mfu_and_writes_verified_async_checkpoints(
    tiny_dataset_dir: Path, isolated_home: Path, tmp_path: Path,
) -> None:
    config = {**TEST_TRAIN, "mixed_precision": "bf16", "compile": True}
    run = run_ranks(1, config, tiny_dataset_dir, tmp_path, isolated_home)
    assert run.returncode == 0, run.output[-3000:]
    assert run.result is not None
    losses = run.result["loss_curve"]
    assert losses[-1] < 0.7 * losses[0]
    metrics = run.result["metrics"]
    assert 0 < metrics.get("mfu", 0) < 1  # only reported for a known card
    checkpoints = list_checkpoints(run.checkpoint_dir)
    assert checkpoints and all(verify_checkpoint(p) is None for _, p in checkpoints)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_gpu_fsdp_matches_ddp_in_bf16(
    tiny_dataset_dir: Path, isolated_home: Path, tmp_path: Path,
) -> None:
    base = {**TEST_TRAIN, "mixed_precision": "bf16"}
    ddp = run_ranks(2, base, tiny_dataset_dir, tmp_path / "ddp", isolated_home)
    fsdp = run_ranks(2, {**base, "parallelism": "fsdp"}, tiny_dataset_dir, tmp_path / "fsdp",
                     isolated_home)
    assert ddp.returncode == 0 and fsdp.returncode == 0, (ddp.output + fsdp.output)[-3000:]
    assert ddp.result and fsdp.result
    assert fsdp.result["loss_curve"] == pytest.approx(ddp.result["loss_curve"], abs=2e-2)
