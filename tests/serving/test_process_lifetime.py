"""Processes a stage starts die with it; engines get a minimal environment.

The parent here is a real Python process running `serving.process.spawn`, killed with SIGKILL
(no cleanup code can run): the kernel's parent-death signal must still end its children,
except those spawned to outlive it (deploy's long-lived servers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.settings import PROJECT_ROOT
from serving.process import pid_alive, spawn, stop_process_group
from serving.vllm_engine import local_environment, minimal_environment, vllm_environment

pytestmark = pytest.mark.integration

SECRETS = {"OPENAI_API_KEY": "sk-judge", "SHIPYARD_JUDGE_API_KEY": "judge",
           "MLFLOW_TRACKING_PASSWORD": "pw", "MLFLOW_TRACKING_TOKEN": "tok",
           "AWS_SECRET_ACCESS_KEY": "aws", "HF_TOKEN": "hf", "GITHUB_TOKEN": "gh",
           "MLFLOW_TRACKING_URI": "https://user:pw@mlflow.example"}

_PARENT = """
import sys, time
from pathlib import Path
from serving.process import spawn
outlive = sys.argv[1] == "outlive"
child = spawn([sys.executable, "-c", "import time; time.sleep(120)"], env={"PATH": "/usr/bin"},
              log_path=Path(sys.argv[2]), outlive_parent=outlive)
print(child.pid, flush=True)
time.sleep(120)
"""


def _spawn_parent(mode: str, tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, mode, str(tmp_path / "c.log")],
                              cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_child_dies_when_its_owner_is_killed(tmp_path: Path) -> None:
    parent, child = _spawn_parent("die", tmp_path)
    assert pid_alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    assert _gone_within(child, 30), f"child {child} outlived its SIGKILLed parent"


def test_long_lived_server_outlives_its_owner(tmp_path: Path) -> None:
    parent, child = _spawn_parent("outlive", tmp_path)
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        time.sleep(0.5)  # a parent-death signal would have arrived by now
        assert pid_alive(child)
    finally:
        stop_process_group(child, grace_seconds=5)
    assert not pid_alive(child)


def test_engine_environment_carries_no_credentials(tmp_path: Path) -> None:
    parent_env = {**os.environ, **SECRETS, "HF_HUB_OFFLINE": "1"}
    for env in (local_environment(parent_env, PROJECT_ROOT),
                vllm_environment(parent_env, tmp_path / "cache", tmp_path / "venv")):
        assert not set(SECRETS) & set(env), sorted(set(SECRETS) & set(env))
        assert env["HF_HUB_OFFLINE"] == "1" and env["PATH"] == os.environ["PATH"]
    # and the running process really has only that environment
    process = spawn([sys.executable, "-c", "import time; time.sleep(30)"],
                    env=local_environment(parent_env, PROJECT_ROOT), log_path=tmp_path / "e.log")
    try:
        names = {entry.split(b"=", 1)[0].decode() for entry in
                 Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0") if entry}
        assert not set(SECRETS) & names
    finally:
        stop_process_group(process.pid, process, grace_seconds=5)


@pytest.mark.unit
def test_minimal_environment_drops_secret_looking_names_even_under_allowed_prefixes() -> None:
    env = minimal_environment({"HF_TOKEN": "x", "VLLM_API_KEY": "y", "OMP_NUM_THREADS": "2",
                               "LC_ALL": "C", "RANDOM_VAR": "z"})
    assert env == {"OMP_NUM_THREADS": "2", "LC_ALL": "C"}


@pytest.mark.unit
def test_vllm_command_turns_off_torch_compile_only_when_asked(tmp_path: Path) -> None:
    """deploy.enforce_eager (the tiny preset) reaches the engine as vLLM's own flag, once."""
    from serving.vllm_engine import vllm_command

    compiled = vllm_command(tmp_path / "python", tmp_path, "m", 8000, 256)
    eager = vllm_command(tmp_path / "python", tmp_path, "m", 8000, 256, enforce_eager=True)
    assert "--enforce-eager" not in compiled
    assert eager.count("--enforce-eager") == 1
    assert [a for a in eager if a != "--enforce-eager"] == compiled
