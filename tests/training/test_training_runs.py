"""Integration tests: real torch.distributed (gloo) runs of the training entry point.

Tolerances: 1 vs 2 processes at the same global batch differ only in float summation order
(gradient all-reduce, per-rank loss means); measured max |Δloss| ≈ 5e-7 over 12 steps, so
the bound is 1e-4 absolute. The golden curve is compared at 1e-4 relative: tight enough to
catch any change in data, model, init, optimizer or schedule (those move the loss by >1e-2),
loose enough for a different CPU's float kernels.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import subprocess_env
from tests.training.conftest import TEST_TRAIN, RankRun, run_ranks, torchrun_command
from training.checkpoint import list_checkpoints

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "losses" / "tiny_12_steps.json"
DDP_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train-home")


@pytest.fixture(scope="module")
def single_process(tiny_dataset_dir: Path, module_home: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> RankRun:
    run = run_ranks(1, TEST_TRAIN, tiny_dataset_dir, tmp_path_factory.mktemp("ws1"), module_home)
    assert run.returncode == 0, run.output[-3000:]
    return run


@pytest.fixture(scope="module")
def two_process_ddp(tiny_dataset_dir: Path, module_home: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> RankRun:
    run = run_ranks(2, TEST_TRAIN, tiny_dataset_dir, tmp_path_factory.mktemp("ws2"), module_home)
    assert run.returncode == 0, run.output[-3000:]
    return run


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def test_tiny_preset_loss_falls_and_matches_the_committed_golden_curve(
    single_process: RankRun,
) -> None:
    assert single_process.result is not None
    losses = single_process.result["loss_curve"]
    assert len(losses) == TEST_TRAIN["max_steps"]
    assert losses[-1] < 0.6 * losses[0], f"loss did not fall: {losses}"
    golden = json.loads(GOLDEN.read_text())
    assert golden["config"] == TEST_TRAIN
    assert losses == pytest.approx(golden["losses"], rel=1e-4)


def test_two_process_ddp_matches_one_process_at_the_same_global_batch(
    single_process: RankRun, two_process_ddp: RankRun,
) -> None:
    assert single_process.result and two_process_ddp.result
    one, two = single_process.result["loss_curve"], two_process_ddp.result["loss_curve"]
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < DDP_TOLERANCE
    assert two_process_ddp.result["metrics"]["world_size"] == 2
    for name, tensor in _weights(single_process.output_dir).items():
        other = _weights(two_process_ddp.output_dir)[name]
        assert torch.allclose(tensor, other, atol=1e-4), name


def test_fsdp2_matches_ddp(tiny_dataset_dir: Path, module_home: Path, tmp_path: Path,
                           two_process_ddp: RankRun) -> None:
    fsdp = run_ranks(2, {**TEST_TRAIN, "parallelism": "fsdp"}, tiny_dataset_dir, tmp_path,
                     module_home)
    assert fsdp.returncode == 0, fsdp.output[-3000:]
    assert fsdp.result and two_process_ddp.result
    diffs = [abs(a - b) for a, b in zip(fsdp.result["loss_curve"],
                                        two_process_ddp.result["loss_curve"], strict=True)]
    assert max(diffs) < DDP_TOLERANCE
    # the exported directory is a plain HF model, whatever the sharding during training
    assert set(_weights(fsdp.output_dir)) == set(_weights(two_process_ddp.output_dir))


def test_output_is_a_loadable_hf_model_with_a_generation_config_that_fits(
    single_process: RankRun,
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(single_process.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(single_process.output_dir)
    generation = GenerationConfig.from_pretrained(single_process.output_dir)
    assert model.config.architectures == ["LlamaForCausalLM"]
    assert 1_000_000 <= model.num_parameters() <= 5_000_000
    assert generation.max_new_tokens <= model.config.max_position_embeddings
    out = model.generate(**tokenizer("### Instruction:\nWhat", return_tensors="pt"),
                         max_new_tokens=4)
    assert out.shape[1] > 3


def test_killed_workers_resume_from_the_last_checkpoint_to_identical_weights(
    tiny_dataset_dir: Path, module_home: Path, tmp_path: Path, two_process_ddp: RankRun,
) -> None:
    """SIGKILL the whole torchrun job once step 8 is checkpointed, restart it, and the
    final weights equal an uninterrupted run's."""
    work = tmp_path / "killed"
    work.mkdir()
    proc = subprocess.Popen(
        torchrun_command(2, TEST_TRAIN, tiny_dataset_dir, work), env=subprocess_env(module_home),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while not any(s >= 8 for s, _ in list_checkpoints(work / "checkpoints")):
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint at step 8 within 300 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (work / "result.json").exists(), "the job finished before the kill"
    resumed = run_ranks(2, TEST_TRAIN, tiny_dataset_dir, work, module_home)
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert resumed.result is not None and two_process_ddp.result is not None
    assert resumed.result["resumed_from_step"] >= 8
    assert resumed.result["loss_curve"] == pytest.approx(two_process_ddp.result["loss_curve"],
                                                         abs=DDP_TOLERANCE)
    reference = _weights(two_process_ddp.output_dir)
    for name, tensor in _weights(resumed.output_dir).items():
        assert torch.equal(tensor, reference[name]), f"{name} differs after resume"


def test_a_corrupted_checkpoint_is_skipped_with_a_warning_naming_it(
    tiny_dataset_dir: Path, module_home: Path, tmp_path: Path, single_process: RankRun,
) -> None:
    """Truncate the newest checkpoint of a finished run and run again: resume skips it,
    continues from the one before, and still lands on the uninterrupted weights."""
    config = {**TEST_TRAIN, "keep_checkpoints": 3}  # pruning only: same math as TEST_TRAIN
    work = tmp_path / "corrupt"
    first = run_ranks(1, config, tiny_dataset_dir, work, module_home)
    assert first.returncode == 0, first.output[-3000:]
    newest = Path(dict(list_checkpoints(work / "checkpoints"))[12])  # local: a Path
    shard = next(newest.glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a truncated write
    (work / "result.json").unlink()
    resumed = run_ranks(1, config, tiny_dataset_dir, work, module_home)
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert f"skipping checkpoint {newest}: sha256 mismatch in {shard.name}" in resumed.output
    assert resumed.result is not None and resumed.result["resumed_from_step"] == 8
    reference = _weights(single_process.output_dir)
    for name, tensor in _weights(resumed.output_dir).items():
        assert torch.equal(tensor, reference[name]), f"{name} differs after resume"


def test_resume_under_another_config_or_dataset_is_refused_with_both_digests(
    tiny_dataset_dir: Path, module_home: Path, tmp_path: Path, single_process: RankRun,
) -> None:
    """The finished run's checkpoints, resumed with another learning rate or after one
    training example changed, are refused before any step: the model would otherwise carry
    a config digest (or dataset digests) that do not describe how it was trained."""
    work = tmp_path / "other-config"
    shutil.copytree(single_process.checkpoint_dir, work / "checkpoints")
    other_config = {**TEST_TRAIN, "learning_rate": 1e-3}
    run = run_ranks(1, other_config, tiny_dataset_dir, work, module_home)
    assert run.returncode != 0
    assert "TRAIN_CHECKPOINT_CONFIG_MISMATCH" in run.output
    assert "['learning_rate']" in run.output
    assert not run.output_dir.exists()

    data = tmp_path / "other-data"
    shutil.copytree(tiny_dataset_dir, data)
    lines = (data / "train.jsonl").read_text().splitlines(keepends=True)
    (data / "train.jsonl").write_text("".join(lines[:-1]))  # one example fewer
    work = tmp_path / "other-dataset"
    shutil.copytree(single_process.checkpoint_dir, work / "checkpoints")
    run = run_ranks(1, TEST_TRAIN, data, work, module_home)
    assert run.returncode != 0
    assert "TRAIN_CHECKPOINT_DATASET_MISMATCH" in run.output
    assert "train.jsonl: checkpoint " in run.output
    assert not run.output_dir.exists()


def test_bf16_on_a_cpu_worker_is_refused_before_training(
    tiny_dataset_dir: Path, module_home: Path, tmp_path: Path,
) -> None:
    run = run_ranks(1, {**TEST_TRAIN, "mixed_precision": "bf16"}, tiny_dataset_dir, tmp_path,
                    module_home)
    assert run.returncode != 0  # torchrun reports the worker's failure
    assert "train.mixed_precision='bf16' needs a CUDA device" in run.output
    assert not run.output_dir.exists()


def _descendants(root_pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:  # field 4 of /proc/PID/stat is the parent pid (after "pid (comm) state")
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1]
                                               .split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root_pid]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _rank_pid(launcher_pid: int, rank: int) -> int | None:
    """PID of the worker process started by torchrun `launcher_pid` with RANK=`rank`."""
    for pid in _descendants(launcher_pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ:
            return pid
    return None


def test_a_dead_rank_fails_the_whole_job_instead_of_hanging(
    tiny_dataset_dir: Path, module_home: Path, tmp_path: Path,
) -> None:
    """SIGKILL one worker mid-run: torch elastic stops the others and the job exits non-zero
    (the subprocess timeout is the bound; the collective timeout is the backstop)."""
    config = {**TEST_TRAIN, "max_steps": 400, "checkpoint_every_steps": 2,
              "collective_timeout_seconds": 60}
    proc = subprocess.Popen(
        torchrun_command(2, config, tiny_dataset_dir, tmp_path), env=subprocess_env(module_home),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not list_checkpoints(tmp_path / "checkpoints"):
            assert proc.poll() is None and time.monotonic() < deadline, "training never started"
            time.sleep(0.1)
        victim = _rank_pid(proc.pid, 1)
        assert victim is not None, "rank 1 worker not found"
        os.kill(victim, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert "Signal 9 (SIGKILL)" in stderr or "exitcode  : -9" in stderr, stderr[-2000:]
    assert not (tmp_path / "result.json").exists()
