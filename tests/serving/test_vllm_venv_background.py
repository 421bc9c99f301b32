"""The vLLM CPU venv created in the background while a local pipeline runs: a later deploy
waits for it on the lock, and a killed pipeline leaves no installer running.

A fake base interpreter stands in for the slow steps (`<base python> -m venv` is the first
one), so nothing is downloaded here; the real install is exercised by the deploy tests.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from common.errors import StageError
from common.settings import PROJECT_ROOT
from serving.vllm_venv import background_log_path, ensure_vllm_venv, is_ready

pytestmark = pytest.mark.integration


def _fake_python(tmp_path: Path, seconds: float) -> Path:
    """An 'interpreter' whose `-m venv` step takes `seconds` and then fails."""
    script = tmp_path / f"slow-python-{seconds:g}"
    script.write_text(f"#!/bin/sh\nsleep {seconds}\nexit 1\n")
    script.chmod(0o755)
    return script


def _requirements(tmp_path: Path) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text("# nothing\n")
    return path


def _gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_deploy_waits_for_the_background_install_then_tries_itself(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from serving.vllm_venv import start_background_install

    venv, requirements = tmp_path / "venvs" / "vllm", _requirements(tmp_path)
    child = start_background_install(venv, requirements=requirements,
                                     base_python=str(_fake_python(tmp_path, 3)))
    assert child is not None
    assert "in the background" in capsys.readouterr().out
    time.sleep(1.0)  # the child holds the lock by now
    began = time.monotonic()
    with pytest.raises(StageError) as caught:
        ensure_vllm_venv(venv, requirements=requirements,
                         base_python=str(_fake_python(tmp_path, 0)), timeout_seconds=60)
    assert time.monotonic() - began >= 1.0  # it waited for the background installer
    assert "waiting for the vLLM CPU venv that another process is creating" in \
        capsys.readouterr().out
    # the background attempt failed, so deploy tried once itself and names the step
    assert caught.value.code == "DEPLOY_VLLM_VENV_FAILED"
    assert caught.value.details["step"] == "create venv"
    assert child.wait(timeout=30) == 1
    assert "DEPLOY_VLLM_VENV_FAILED" in background_log_path(venv).read_text()
    assert not is_ready(venv, requirements)


def test_a_killed_pipeline_leaves_no_installer_running(tmp_path: Path) -> None:
    """SIGKILL the process that started the background install (a pipeline killed mid-run):
    the installer and its children die, the lock is free and nothing looks ready."""
    venv, requirements = tmp_path / "venvs" / "vllm", _requirements(tmp_path)
    slow = _fake_python(tmp_path, 300)
    pipeline = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from pathlib import Path\n"
         "from serving.vllm_venv import start_background_install\n"
         f"child = start_background_install(Path({str(venv)!r}), "
         f"requirements=Path({str(requirements)!r}), base_python={str(slow)!r})\n"
         "print('child', child.pid, flush=True)\n"
         "time.sleep(600)\n"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert pipeline.stdout is not None
        lines = [pipeline.stdout.readline() for _ in range(2)]
        child_pid = int(next(line for line in lines if line.startswith("child")).split()[1])
        deadline = time.monotonic() + 30
        installers: list[psutil.Process] = []
        while time.monotonic() < deadline and not installers:  # the slow `-m venv` step
            installers = [p for p in psutil.Process(child_pid).children(recursive=True)
                          if "sleep" in p.name()]
            time.sleep(0.1)
        assert installers, "the background installer never started its first step"
    finally:
        os.kill(pipeline.pid, signal.SIGKILL)
        pipeline.wait(timeout=30)
    assert _gone(child_pid), "the background installer outlived the pipeline"
    assert all(_gone(p.pid) for p in installers), "an installer step outlived the pipeline"
    with (venv.parent / f"{venv.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: raises if still held
    assert not is_ready(venv, requirements)


@pytest.mark.unit
def test_only_a_local_run_that_may_serve_on_vllm_starts_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import serving.vllm_venv
    from deploy.config import DeployConfig
    from tasks.resolve import start_vllm_venv_early

    started: list[Path] = []
    monkeypatch.setattr(serving.vllm_venv, "start_background_install",
                        lambda venv_dir: started.append(Path(venv_dir)))
    start_vllm_venv_early(DeployConfig(engine="local"))
    start_vllm_venv_early(DeployConfig(engine="auto", backend="kubernetes",
                                       prometheus_url="http://p:9090", gateway_url="http://g"))
    assert started == []
    start_vllm_venv_early(DeployConfig(engine="auto", vllm_venv_dir=str(tmp_path / "a")))
    start_vllm_venv_early(DeployConfig(engine="vllm", vllm_venv_dir=str(tmp_path / "b")))
    assert started == [tmp_path / "a", tmp_path / "b"]
