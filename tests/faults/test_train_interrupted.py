"""train stopped after a checkpoint: the signal goes to the stage's main process only (the
torch-elastic launcher, as the kubelet stops a Flyte Elastic pod), not to its workers.

Then: no process of the stage's process group is left (its workers die with it), and the
re-run resumes from the checkpoint and converges to the model digest of a run that was never
interrupted. Weight-level identity after a kill of the whole job, with two ranks, is
tests/training/test_training_runs.py::test_killed_workers_resume_from_the_last_checkpoint_
to_identical_weights; this file adds the kill of the launcher alone and the orphan count.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import subprocess_env
from tests.faults.test_register_interrupted import processes_in_group
from tests.training.conftest import TEST_TRAIN, RankRun, run_ranks, torchrun_command
from training.checkpoint import list_checkpoints

pytestmark = [pytest.mark.faults, pytest.mark.integration]
KILL_AFTER_STEP = 4  # the first checkpoint of TEST_TRAIN (12 steps, one every 4)


@pytest.fixture(scope="module")
def train_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train-fault-home")


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset_dir: Path, train_home: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> RankRun:
    run = run_ranks(1, TEST_TRAIN, tiny_dataset_dir, tmp_path_factory.mktemp("ref"), train_home)
    assert run.returncode == 0 and run.result is not None, run.output[-3000:]
    return run


def _gone(pgid: int, seconds: float) -> list[int]:
    """The group's live processes once they had `seconds` to exit (PDEATHSIG, elastic)."""
    deadline = time.monotonic() + seconds
    while (left := processes_in_group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_train_leaves_no_worker_and_resumes_to_the_same_digest(
        tiny_dataset_dir: Path, train_home: Path, uninterrupted: RankRun, tmp_path: Path,
        signum: int) -> None:
    work = tmp_path / "killed"
    work.mkdir()
    launcher = subprocess.Popen(
        torchrun_command(1, TEST_TRAIN, tiny_dataset_dir, work), env=subprocess_env(train_home),
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "killed.log").open("w"),
        start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        checkpoints = work / "checkpoints"
        while not any(step >= KILL_AFTER_STEP for step, _ in list_checkpoints(checkpoints)):
            assert launcher.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"no checkpoint at step {KILL_AFTER_STEP}"
            time.sleep(0.05)
        launcher.send_signal(signum)  # the launcher only: its workers must not outlive it
        assert launcher.wait(timeout=120) != 0
        left = _gone(launcher.pid, 30)
    finally:
        for pid in processes_in_group(launcher.pid):  # clean up, then fail below
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert left == [], f"workers outlived the killed train stage: {left}"
    assert not (work / "result.json").exists(), "training finished before the kill"

    resumed = run_ranks(1, TEST_TRAIN, tiny_dataset_dir, work, train_home)
    assert resumed.returncode == 0 and resumed.result is not None, resumed.output[-3000:]
    assert resumed.result["resumed_from_step"] >= KILL_AFTER_STEP
    assert uninterrupted.result is not None
    assert resumed.result["model_digest"] == uninterrupted.result["model_digest"]
