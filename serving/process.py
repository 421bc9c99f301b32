"""Server processes on loopback: start in their own process group, wait for `/health`, stop
the whole group (SIGTERM, then SIGKILL after a grace period) and reap it.

Each server gets its own session (`start_new_session`), so stopping it also stops anything it
forked (vLLM starts an engine-core process), and a Ctrl-C in the parent's terminal does not
hit it directly: the owner decides when it stops.

A server dies with the process that started it (Linux `PR_SET_PDEATHSIG`: SIGTERM when the
parent dies, SIGKILL included) unless the caller says it must outlive it: only deploy's
stable, canary and router do, and the deployment's state file tracks them. Note that the
kernel sends the signal when the *thread* that spawned the child exits: spawn from a thread
that lives as long as the owner (the stages spawn from their main thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from common.errors import StageError

LOOPBACK = "127.0.0.1"
# Children this process started, by pid, so a stop by pid (from a state file) can still reap
# them instead of leaving zombies behind.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (chosen by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


_PR_SET_PDEATHSIG = 1


def _die_with(parent_pid: int) -> None:
    """Runs in the child between fork and exec: ask the kernel for SIGTERM when the parent
    dies, and close the race where it already died before this line ran."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def spawn(command: Sequence[str], *, env: Mapping[str, str], log_path: Path,
          cwd: Path | None = None, outlive_parent: bool = False) -> subprocess.Popen[bytes]:
    """Start `command` in its own session, output appended to `log_path`. The child dies with
    this process unless `outlive_parent` (a deployment's long-lived servers)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    parent_pid = os.getpid()
    preexec = None if outlive_parent else (lambda: _die_with(parent_pid))
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(command), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec,
        )
    _CHILDREN[process.pid] = process
    return process


def wait_until_healthy(url: str, process: subprocess.Popen[bytes] | None, *, pid: int,
                       timeout_seconds: float, log_path: Path, what: str) -> None:
    """Poll `url` until it answers 200; fail fast if the process exits first."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StageError(
                "DEPLOY_ENGINE_EXITED",
                f"{what} exited with code {process.returncode} before becoming healthy. "
                f"Last log lines:\n{tail(log_path)}\nFull log: {log_path}",
                details={"log": str(log_path)},
            )
        if process is None and not pid_alive(pid):
            raise StageError("DEPLOY_ENGINE_EXITED", f"{what} (pid {pid}) is gone. "
                             f"Log: {log_path}")
        if http_ok(url):
            return
        time.sleep(0.25)
    raise StageError(
        "DEPLOY_ENGINE_NOT_READY",
        f"{what} did not answer 200 on {url} within {timeout_seconds:.0f} s. Last log lines:"
        f"\n{tail(log_path)}\nFull log: {log_path}. Raise ready_timeout_seconds if the machine "
        "is slow (vLLM on 2 CPU cores needs about a minute).",
        details={"log": str(log_path)},
    )


def http_ok(url: str, timeout_seconds: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def stop_process_group(pid: int, process: subprocess.Popen[bytes] | None = None, *,
                       grace_seconds: float = 30.0) -> None:
    """SIGTERM the group led by `pid`, wait up to `grace_seconds`, then SIGKILL; reap `process`.

    Safe to call twice and on a process that already exited.
    """
    process = process or _CHILDREN.get(pid)
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        exited = process is None or process.poll() is not None
        if exited and not group_alive(pid):
            _CHILDREN.pop(pid, None)
            return
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    # Members of the group that are not our children are reaped by init; wait until gone.
    deadline = time.monotonic() + 10
    while group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    _CHILDREN.pop(pid, None)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except OSError as exc:
        if exc.errno not in (errno.ESRCH, errno.EPERM):
            raise


def group_alive(pgid: int) -> bool:
    """True while any process of group `pgid` is alive (zombies do not count)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields after the command: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def tail(path: Path, num_lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-num_lines:])
    except OSError:
        return "(no log)"
