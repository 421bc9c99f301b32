"""Multi-node training on one machine: two torchrun agents ("nodes") on loopback, joined by
c10d rendezvous, each starting its own workers, with checkpoints on a real S3 endpoint (moto
in server mode, started by the test). The same entry point, launcher and checkpoint code a
PyTorchJob runs, except for gloo instead of NCCL and loopback instead of a cluster network.

Tolerance: 2 nodes x 1 process (DDP over gloo) against the committed 1-process golden curve at
the same global batch differ only in float summation order (the gradient all-reduce and the
per-rank loss means): measured max |Δloss| ~5e-7 over 12 steps for 1 vs 2 processes on one node
(tests/training/test_training_runs.py), so the same 1e-4 absolute bound applies here. HSDP
(2 nodes x 2 processes: replicate over nodes, shard within one) is the same math with the
gradients reduce-scattered then all-reduced: same bound.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import subprocess_env
from tests.training.conftest import TEST_TRAIN, moto_s3
from training.checkpoint import MANIFEST
from training.config import TrainConfig

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parents[1] / "assets" / "losses" / "tiny_12_steps.json"
TOLERANCE = 1e-4
BUCKET = "shipyard-checkpoints"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1"}
# Small, so a lost node ends the test's job in seconds: the rendezvous waits at most
# 60 s for the other agent, a collective at most 60 s for a peer.
FAST_FAILURE = {"rdzv_join_timeout_seconds": 60, "rdzv_last_call_timeout_seconds": 2,
                "rdzv_close_timeout_seconds": 10, "collective_timeout_seconds": 60}


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    """A real S3 API on loopback (moto server) with one bucket; env that points s3fs at it."""
    with moto_s3(BUCKET) as endpoint:
        yield {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("multinode-home")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _s3(env: dict[str, str]) -> Any:
    import s3fs

    return s3fs.S3FileSystem(key="testing", secret="testing",
                             endpoint_url=env["AWS_ENDPOINT_URL"], skip_instance_cache=True)


@dataclass
class Job:
    """One multi-node job: the same command on each "node", one agent per node."""

    config: dict[str, Any]
    work: Path
    env: dict[str, str]
    nproc_per_node: int = 1

    def agent_command(self, port: int) -> list[str]:
        rdzv = TrainConfig(**self.config).rdzv_configs()
        return [
            sys.executable, "-m", "torch.distributed.run",
            f"--nnodes={self.config['nnodes']}", f"--nproc-per-node={self.nproc_per_node}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
            f"--rdzv-id=job-{port}", "--rdzv-conf=" + ",".join(f"{k}={v}" for k, v in
                                                               rdzv.items()),
            "--max-restarts=0", "--monitor-interval=1",
            "-m", "training.launch", "--config-json", json.dumps(self.config),
            "--dataset-dir", str(self.env["DATASET_DIR"]), "--output-dir",
            str(self.work / "model"), "--result-json", str(self.work / "result.json"),
        ]

    def start(self) -> list[subprocess.Popen[str]]:
        self.work.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        return [subprocess.Popen(self.agent_command(port), env=self.env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)
                for _ in range(self.config["nnodes"])]

    def run(self, timeout_seconds: float = 300) -> tuple[list[int], str, dict[str, Any] | None]:
        agents = self.start()
        try:
            outputs = [a.communicate(timeout=timeout_seconds)[0] for a in agents]
        finally:
            _kill(agents)
        result_path = self.work / "result.json"
        result = json.loads(result_path.read_text()) if result_path.is_file() else None
        return [a.returncode for a in agents], "\n".join(outputs), result


def _kill(agents: list[subprocess.Popen[str]]) -> None:
    for agent in agents:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()


def _job(name: str, tmp: Path, home: Path, s3_env: dict[str, str], dataset_dir: Path,
         nproc_per_node: int = 1, **overrides: Any) -> Job:
    config = {**TEST_TRAIN, **FAST_FAILURE, "nnodes": 2, "nproc_per_node": nproc_per_node,
              "checkpoint_dir": f"s3://{BUCKET}/{name}", **overrides}
    env = {**subprocess_env(home), **s3_env, "DATASET_DIR": str(dataset_dir)}
    return Job(config, tmp / name, env, nproc_per_node)


@pytest.fixture(scope="module")
def two_nodes(tiny_dataset_dir: Path, module_home: Path, s3_env: dict[str, str],
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    job = _job("ddp", tmp_path_factory.mktemp("nodes"), module_home, s3_env, tiny_dataset_dir)
    codes, output, result = job.run()
    assert codes == [0, 0], output[-4000:]
    assert result is not None
    return result


def _golden() -> list[float]:
    golden = json.loads(GOLDEN.read_text())
    assert golden["config"] == TEST_TRAIN  # same steps, batch and schedule as these runs
    return list(golden["losses"])


def test_two_nodes_give_the_one_process_loss_at_the_same_global_batch(
    two_nodes: dict[str, Any], s3_env: dict[str, str],
) -> None:
    losses = two_nodes["loss_curve"]
    assert max(abs(a - b) for a, b in zip(losses, _golden(), strict=True)) < TOLERANCE
    assert two_nodes["metrics"]["world_size"] == 2
    # the checkpoints are on the object store, sealed (manifest) and pruned to keep=2
    fs = _s3(s3_env)
    steps = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/ddp"))
    assert steps == ["step-00000008", "step-00000012"]
    manifest = json.loads(fs.cat(f"{BUCKET}/ddp/step-00000012/{MANIFEST}"))
    assert manifest["world_size"] == 2 and set(manifest["hashed_by_rank"]) == {"0", "1"}
    assert "rng-rank1.pt" in manifest["hashed_by_rank"]["1"]


def test_hsdp_over_two_nodes_of_two_processes_matches_the_golden_curve(
    tiny_dataset_dir: Path, module_home: Path, s3_env: dict[str, str], tmp_path: Path,
) -> None:
    """A real 2-D mesh: (2 nodes) x (2 ranks per node), 4 steps (the warm-up does not depend
    on max_steps, so they are the golden curve's first 4)."""
    job = _job("hsdp", tmp_path, module_home, s3_env, tiny_dataset_dir, nproc_per_node=2,
               parallelism="hsdp", micro_batch_size=4, max_steps=4)
    codes, output, result = job.run()
    assert codes == [0, 0], output[-4000:]
    assert result is not None
    losses = result["loss_curve"]
    assert max(abs(a - b) for a, b in zip(losses, _golden()[:4], strict=True)) < TOLERANCE
    assert result["metrics"]["world_size"] == 4


def _published_steps(fs: Any, prefix: str) -> list[int]:
    fs.invalidate_cache()
    if not fs.exists(prefix):
        return []
    return [int(p.rsplit("-", 1)[-1]) for p in fs.ls(prefix)
            if fs.exists(f"{p}/{MANIFEST}")]


def test_a_killed_node_fails_the_job_and_the_rerun_resumes_to_the_same_model(
    tiny_dataset_dir: Path, module_home: Path, s3_env: dict[str, str], tmp_path: Path,
    two_nodes: dict[str, Any],
) -> None:
    """SIGKILL one agent (a node: its launcher and worker) once step 4 is checkpointed on S3:
    the other node's job exits non-zero; both agents started again resume from the
    checkpoint and finish with the uninterrupted run's model digest."""
    job = _job("killed", tmp_path, module_home, s3_env, tiny_dataset_dir)
    fs = _s3(s3_env)
    agents = job.start()
    try:
        deadline = time.monotonic() + 240
        while not any(s >= 4 for s in _published_steps(fs, f"{BUCKET}/killed")):
            assert all(a.poll() is None for a in agents), "training ended before the kill"
            assert time.monotonic() < deadline, "no checkpoint at step 4 within 240 s"
            time.sleep(0.2)
        # a node dies whole: torchrun starts each worker in a session of its own, so the
        # agent's process group alone would leave the node's worker training on
        node = [agents[1].pid, *(c.pid for c in psutil.Process(agents[1].pid).children(
            recursive=True))]
        for pid in node:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        killed_at = time.monotonic()
        survivor_output = agents[0].communicate(timeout=180)[0]
        survivor_seconds = time.monotonic() - killed_at
    finally:
        _kill(agents)
    assert agents[0].returncode != 0, survivor_output[-3000:]
    assert survivor_seconds < 120  # bounded by the collective/rendezvous timeouts above
    assert not (job.work / "result.json").exists(), "the job finished before the kill"

    codes, output, result = job.run()
    assert codes == [0, 0], output[-4000:]
    assert result is not None
    assert result["resumed_from_step"] >= 4
    assert result["model_digest"] == two_nodes["model_digest"]
    assert result["loss_curve"] == pytest.approx(two_nodes["loss_curve"], abs=TOLERANCE)
