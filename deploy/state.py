"""What a local deployment leaves running, recorded in
`<SHIPYARD_HOME>/deployments/<name>/state.json`: the router and the stable (and, during a
rollout, canary) engines with their PIDs, ports and models, and an engine still `starting`
(recorded as soon as it is spawned, before the wait for its health: a deploy killed then
leaves an engine that the next deploy, `shipyard stop` or `shipyard gc` finds and stops).

The next deploy reads it to find the stable it canaries against; `python -m deploy.cli
status|stop` reads it to show and stop the servers. A record counts only while its process is
alive and still the one we started (its command line names its port): a PID reused by some
other program after a reboot is never signalled. Records written since issue #19 also carry
the process's start time (`start_ticks`), which a recycled PID cannot match.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.errors import StageError
from common.fs import atomic_write_text, private_dir
from common.layout import HomeLayout
from common.locks import LockHeld, file_lock
from serving.process import pid_alive


@dataclass
class ServerRecord:
    role: str  # "router", "stable", "canary" or "starting" (not yet healthy and warmed up)
    kind: str  # "router", "vllm" or "local"
    pid: int
    port: int
    log_path: str
    served_model_name: str | None = None
    model_uri: str | None = None
    model_version: str | None = None
    model_digest: str | None = None
    model_dir: str | None = None
    admin_port: int | None = None  # the router's admin listener (router records only)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    # /proc/PID/stat start time (clock ticks since boot) of the process recorded; None in
    # records written before it existed (then the port on the command line decides alone)
    start_ticks: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_alive(self) -> bool:
        if not pid_alive(self.pid):
            return False
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if self.start_ticks is not None and process_start_ticks(self.pid) != self.start_ticks:
            return False  # the PID was recycled by a process that happens to name the port
        return str(self.port).encode() in cmdline


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot): a PID and its start time name one
    process for the machine's uptime."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[19])  # field 22 of stat(5); the list starts at field 3


@dataclass
class DeploymentState:
    name: str
    router: ServerRecord | None = None
    stable: ServerRecord | None = None
    canary: ServerRecord | None = None
    starting: ServerRecord | None = None  # an engine spawned, not yet stable or canary
    updated_at: str = ""

    def servers(self) -> list[ServerRecord]:
        return [r for r in (self.starting, self.canary, self.stable, self.router)
                if r is not None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DeploymentState:
        def record(value: dict[str, Any] | None) -> ServerRecord | None:
            return ServerRecord(**value) if value else None

        return cls(name=str(raw["name"]), router=record(raw.get("router")),
                   stable=record(raw.get("stable")), canary=record(raw.get("canary")),
                   starting=record(raw.get("starting")),
                   updated_at=str(raw.get("updated_at", "")))


def deployments_dir(home: Path) -> Path:
    return HomeLayout(home).deployments_dir


def state_path(home: Path, name: str) -> Path:
    return HomeLayout(home).deployment_dir(name) / "state.json"


def load_state(home: Path, name: str) -> DeploymentState:
    """The recorded state with dead servers dropped (a missing file is an empty state)."""
    path = state_path(home, name)
    if not path.is_file():
        return DeploymentState(name=name)
    state = DeploymentState.from_dict(json.loads(path.read_text()))
    for role in ("router", "stable", "canary", "starting"):
        record = getattr(state, role)
        if record is not None and not record.is_alive():
            setattr(state, role, None)
    return state


def save_state(home: Path, state: DeploymentState) -> Path:
    path = state_path(home, state.name)
    private_dir(path.parent)
    state.updated_at = datetime.now(UTC).isoformat()
    atomic_write_text(path, json.dumps(state.to_dict(), indent=2) + "\n")  # 0600, fsynced
    return path


def list_deployments(home: Path, *, with_state_only: bool = False) -> list[str]:
    """The deployments under `home`: directories holding a state file (servers recorded) or
    decision records (history of what was deployed). `with_state_only`: those with a state
    file, the only ones that can have servers to show or stop."""
    root = deployments_dir(home)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (
        (p / "state.json").is_file() or (not with_state_only and (p / "records").is_dir())))


@contextmanager
def deployment_lock(work_dir: Path, name: str) -> Iterator[None]:
    """An exclusive, non-blocking lock on the deployment: a second deploy of it fails at
    once (DEPLOY_LOCKED) instead of interleaving with the first (shared staging directory,
    state file, router). The kernel releases it when the holder dies, SIGKILL included."""
    private_dir(work_dir)  # 0700: state, records, history and tokens live here
    path = work_dir / "deploy.lock"
    with ExitStack() as held:
        try:
            held.enter_context(file_lock(path, wait=False))
        except LockHeld as busy:  # only the lock's own refusal, never one from the deploy
            raise StageError(
                "DEPLOY_LOCKED",
                f"deployment {name!r} is being deployed by another process ({busy.holder}; "
                f"lock {path}). Wait for it to finish, or stop it; two deploys never interleave.",
            ) from None
        yield
