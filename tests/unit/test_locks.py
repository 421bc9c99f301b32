"""common/locks.py: the one inter-process file lock (registration, the vLLM venv install;
the deploy lock can move onto it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from common.locks import LockHeld, file_lock
from common.settings import PROJECT_ROOT

pytestmark = pytest.mark.unit

_HOLD = ("import sys, time; from common.locks import file_lock\n"
         "with file_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")


def _holder(path: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE,
                             text=True, cwd=PROJECT_ROOT, env={**os.environ,
                                                               "PYTHONPATH": str(PROJECT_ROOT)})
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_held_lock_is_refused_naming_its_holder_and_freed_when_the_holder_dies(
        tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    child = _holder(path)
    try:
        with pytest.raises(LockHeld) as caught, file_lock(path, wait=False):
            pass
        assert caught.value.holder == f"pid {child.pid}"
    finally:
        child.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel must drop the lock
        child.wait()
    with file_lock(path, wait=False):
        assert path.read_text() == f"pid {os.getpid()}\n"


def test_a_waiting_caller_is_told_once_and_gets_the_lock_after_the_holder(
        tmp_path: Path) -> None:
    path, order = tmp_path / "x.lock", []
    child = _holder(path)

    def release() -> None:
        child.terminate()
        child.wait()

    releaser = threading.Timer(0.5, release)
    releaser.start()
    started = time.monotonic()
    with file_lock(path, on_wait=lambda: order.append("told")):
        order.append("got it")
    releaser.join()
    assert order == ["told", "got it"] and time.monotonic() - started >= 0.4
