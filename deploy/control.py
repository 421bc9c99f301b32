"""Acting on a canary while it bakes, and seeing how far it got: two small files in the
deployment directory (`<SHIPYARD_HOME>/deployments/<name>/`).

    control.json         written by `shipyard promote|abort|pause|resume`, read (and removed)
                         by the running CanaryController at its next scrape interval
    rollout-status.json  written by the CanaryController every scrape interval (phase, step,
                         weights, last verdict), read by `shipyard status`

Authentication is the file system's: the deployment directory belongs to the user who
deploys (0700), and a control file counts only when it is a regular file owned by the
controller's own uid and writable by nobody else. Anything else is refused
(DEPLOY_CONTROL_REFUSED) and removed, never obeyed. Both files are written to a temporary
name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import stat
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from common.errors import StageError
from common.fs import atomic_write_text
from serving.process import pid_alive

ControlAction = Literal["promote", "promote_full", "abort", "pause", "resume"]
CONTROL_ACTIONS: tuple[ControlAction, ...] = ("promote", "promote_full", "abort", "pause",
                                              "resume")
CONTROL_FILE = "control.json"
STATUS_FILE = "rollout-status.json"
LOCK_FILE = "deploy.lock"


@dataclass(frozen=True)
class ControlCommand:
    action: ControlAction
    actor: str  # user@host of whoever wrote the file
    issued_at: str  # ISO 8601, UTC
    issued_unix_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def current_actor() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    """Write to a private temporary file beside `path`, then rename over it (durably)."""
    atomic_write_text(path, text, mode=mode)


def _check_owned(path: Path, st: os.stat_result, uid: int, what: str) -> None:
    problems = []
    if st.st_uid != uid:
        problems.append(f"owned by uid {st.st_uid}, not {uid}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problems.append(f"mode {stat.S_IMODE(st.st_mode):04o} lets others write it")
    if problems:
        raise StageError(
            "DEPLOY_CONTROL_REFUSED",
            f"{what} {path} is {' and '.join(problems)}: only the deployment's owner may act "
            "on its canary. Remove the file; act as the user who deployed.",
            details={"path": str(path), "uid": st.st_uid, "mode": stat.S_IMODE(st.st_mode)})


def write_control(work_dir: Path, action: ControlAction, *, uid: int | None = None,
                  now: float | None = None) -> ControlCommand:
    """Leave `action` for the running controller; the deployment dir becomes 0700."""
    if action not in CONTROL_ACTIONS:
        raise ValueError(f"unknown control action {action!r}")
    uid = os.geteuid() if uid is None else uid
    _check_owned(work_dir, work_dir.stat(), uid, "deployment directory")
    os.chmod(work_dir, 0o700)
    issued = time.time() if now is None else now
    command = ControlCommand(action, current_actor(),
                             datetime.fromtimestamp(issued, UTC).isoformat(), issued)
    _atomic_write(work_dir / CONTROL_FILE, json.dumps(command.to_dict()) + "\n")
    return command


def take_control(work_dir: Path, *, uid: int | None = None) -> ControlCommand | None:
    """The pending command (the file is removed), or None. A file that is not a regular file
    owned by `uid` (default: ours) and closed to others raises DEPLOY_CONTROL_REFUSED; it is
    removed too, so it is reported once, not every interval."""
    uid = os.geteuid() if uid is None else uid
    path = work_dir / CONTROL_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a symlink (ELOOP) or a file we may not read
        with contextlib.suppress(OSError):
            path.unlink()
        raise StageError("DEPLOY_CONTROL_REFUSED",
                         f"control file {path} cannot be opened safely ({exc}): refused and "
                         "removed. Act with `shipyard promote|abort|pause|resume`.") from exc
    try:
        st = os.fstat(fd)
        try:
            if not stat.S_ISREG(st.st_mode):
                raise StageError("DEPLOY_CONTROL_REFUSED",
                                 f"control file {path} is not a regular file: refused.")
            _check_owned(path, st, uid, "control file")
            with os.fdopen(os.dup(fd)) as handle:
                raw = json.loads(handle.read())
            action = raw["action"]
            if action not in CONTROL_ACTIONS:
                raise KeyError(action)
            return ControlCommand(action, str(raw["actor"]), str(raw["issued_at"]),
                                  float(raw["issued_unix_seconds"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise StageError("DEPLOY_CONTROL_REFUSED",
                             f"control file {path} is not a control command ({exc!r}): "
                             "refused. Write it with `shipyard promote|abort|pause|resume`.",
                             ) from exc
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
    finally:
        os.close(fd)


# -- progress, published by the controller ------------------------------------------------------
def write_status(work_dir: Path, status: dict[str, Any]) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    payload = {**status, "pid": os.getpid(), "updated_at": datetime.now(UTC).isoformat()}
    _atomic_write(work_dir / STATUS_FILE, json.dumps(payload, indent=2, default=str) + "\n")


def read_status(work_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((work_dir / STATUS_FILE).read_text()))
    except (OSError, ValueError):
        return None


def deploy_in_progress(work_dir: Path) -> bool:
    """True while a process holds the deployment's lock (deploy.state.deployment_lock writes
    "pid N" into the file it locks; the kernel drops the lock when that process dies)."""
    try:
        text = (work_dir / LOCK_FILE).read_text().split()
    except OSError:
        return False
    if len(text) != 2 or text[0] != "pid" or not text[1].isdigit():
        return False
    return pid_alive(int(text[1])) and _lock_is_held(work_dir / LOCK_FILE)


def _lock_is_held(path: Path) -> bool:
    # /proc/locks lists every held flock by inode: reading it takes no lock of our own, so a
    # deploy that starts right now never sees DEPLOY_LOCKED because of `shipyard status`.
    try:
        inode = path.stat().st_ino
        locks = Path("/proc/locks").read_text()
    except OSError:
        return True  # cannot tell: trust the live pid
    return any(line.split()[5].endswith(f":{inode}") for line in locks.splitlines()
               if len(line.split()) > 5)
