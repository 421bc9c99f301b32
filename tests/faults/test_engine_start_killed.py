"""No untracked engine: a deploy SIGKILLed while an engine starts (the minutes vLLM needs to
become healthy) leaves that engine running, detached by design; it is in the state file as
`starting` from the moment it was spawned, so `shipyard gc`, `shipyard stop` and the next deploy
find it and stop it. A recorded PID that now names another process is never signalled.

The engine is the real local engine on a tiny model (not vLLM); the deploy side is
`LocalBackend.start_track` in its own process, killed as soon as the entry is on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.housekeeping import collect_garbage
from common.settings import PROJECT_ROOT
from deploy.local_backend import LocalBackend
from deploy.stage import deployment_lock
from deploy.state import (
    DeploymentState,
    ServerRecord,
    load_state,
    process_start_ticks,
    save_state,
    state_path,
)
from serving.process import free_port, group_alive, http_ok, pid_alive

pytestmark = [pytest.mark.faults, pytest.mark.integration]
NAME = "engine-start"

_CHILD = """
import sys
from pathlib import Path
from deploy.local_backend import LocalBackend
backend = LocalBackend(Path(sys.argv[1]), sys.argv[2], engine_kind="local")
backend.start_track("canary", Path(sys.argv[3]), "tiny", model_uri="models:/tiny/2",
                    version="2", digest="sha256:test")
"""


def _gone(pid: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not group_alive(pid):
            return True
        time.sleep(0.1)
    return False


def _sleeper(port: int) -> subprocess.Popen[bytes]:
    """A fake long-starting engine: a process with `--port PORT` on its command line (once
    exec has filled /proc/PID/cmdline in, which can lag behind Popen's return)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)",
                                "--port", str(port)], start_new_session=True)
    deadline = time.monotonic() + 10
    while str(port).encode() not in Path(f"/proc/{process.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return process


def _kill_while_starting(home: Path, model_dir: Path, tmp_path: Path) -> ServerRecord:
    """Start an engine in a child deploy process; SIGKILL it once `starting` is recorded."""
    with (tmp_path / "child.log").open("wb") as log:
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(home), NAME,
                                  str(model_dir)], cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                                 stderr=log, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert child.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
            starting = load_state(home, NAME).starting
            if starting is not None:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("no starting entry was recorded")
        healthy_at_kill = http_ok(f"{starting.base_url}/health", timeout_seconds=0.2)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert not healthy_at_kill, "killed after the health wait: not the window under test"
    return starting


def test_an_engine_left_starting_by_a_killed_deploy_is_stopped_by_gc(
        model_dirs: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "home"
    record = _kill_while_starting(home, model_dirs["canary"], tmp_path)

    # Nothing cleaned up: the engine outlived its deploy, and the state file says so.
    state = load_state(home, NAME)
    assert state.starting is not None and state.starting.pid == record.pid
    assert pid_alive(record.pid) and record.start_ticks == process_start_ticks(record.pid)
    assert (record.port, record.model_uri, record.kind) == (state.starting.port,
                                                            "models:/tiny/2", "local")
    assert state.canary is None  # never became the canary: the router would not route to it

    dry, _ = collect_garbage(home, tmp_path / "tmp", time.time(), dry_run=True)
    assert [item.get("process") for item in dry] == [record.pid]
    assert pid_alive(record.pid)  # a dry run stops nothing

    items, skipped = collect_garbage(home, tmp_path / "tmp", time.time(), dry_run=False)
    assert skipped == [] and [item.get("process") for item in items] == [record.pid]
    assert _gone(record.pid), "gc did not stop the orphaned engine"
    assert load_state(home, NAME).starting is None


def test_the_next_deploy_and_stop_find_a_starting_engine(tmp_path: Path) -> None:
    """The cheap half: a fake long-starting engine (a sleeper naming its port) recorded as
    `starting`; the next deploy's repair() stops it, and so does `shipyard stop`."""
    home = tmp_path / "home"
    for cleanup in ("repair", "stop_all"):
        port = free_port()
        sleeper = _sleeper(port)
        try:
            save_state(home, DeploymentState(name=NAME, starting=ServerRecord(
                role="starting", kind="local", pid=sleeper.pid, port=port, log_path="",
                start_ticks=process_start_ticks(sleeper.pid))))
            backend = LocalBackend(home, NAME, engine_kind="local")
            notes = getattr(backend, cleanup)()
            assert sleeper.wait(timeout=30) is not None
            assert load_state(home, NAME).starting is None
            if cleanup == "repair":
                assert any("left starting by an interrupted deploy" in n for n in notes)
        finally:
            sleeper.kill()
            sleeper.wait()


def test_a_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    """A recorded PID that now runs another process is dropped, not killed: here a process
    that even names the recorded port on its command line, but started at another time."""
    home = tmp_path / "home"
    port = free_port()
    other = _sleeper(port)
    try:
        stale = ServerRecord(role="starting", kind="local", pid=other.pid, port=port,
                             log_path="", start_ticks=(process_start_ticks(other.pid) or 1) - 1)
        save_state(home, DeploymentState(name=NAME, starting=stale))
        assert load_state(home, NAME).starting is None
        LocalBackend(home, NAME, engine_kind="local").repair()
        items, _ = collect_garbage(home, tmp_path / "tmp", time.time(), dry_run=False)
        assert not any("process" in item for item in items)
        time.sleep(0.2)
        assert other.poll() is None, "a process that is not the recorded engine was signalled"
    finally:
        other.kill()
        other.wait()


def test_gc_holds_the_deploy_lock_and_skips_a_deployment_being_deployed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    work_dir = state_path(home, NAME).parent
    copy = work_dir / "models" / "v1"
    copy.mkdir(parents=True)
    (copy / "w.bin").write_bytes(b"x" * 64)
    save_state(home, DeploymentState(name=NAME))

    with deployment_lock(work_dir, NAME):  # a deploy is verifying into models/ right now
        items, skipped = collect_garbage(home, tmp_path / "tmp", time.time(), dry_run=False)
    assert skipped == [NAME] and items == [] and copy.exists()

    # While gc cleans a deployment, a deploy of it cannot start (DEPLOY_LOCKED), so nothing
    # it writes is removed from under it.
    import cli.housekeeping as housekeeping
    from common.errors import StageError

    seen: list[str] = []
    real_remove = housekeeping._remove

    def remove_while_a_deploy_tries(*args: object) -> None:
        with pytest.raises(StageError) as info, deployment_lock(work_dir, NAME):
            pass
        seen.append(info.value.code)
        real_remove(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(housekeeping, "_remove", remove_while_a_deploy_tries)
    items, skipped = collect_garbage(home, tmp_path / "tmp", time.time(), dry_run=False)
    assert skipped == [] and [Path(i["path"]).name for i in items] == ["v1"]
    assert seen == ["DEPLOY_LOCKED"] and not copy.exists()
