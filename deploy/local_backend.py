"""The local deployment backend: engines and the weighted router as processes on 127.0.0.1.

Servers start detached (their own session) so the promoted stable and the router outlive the
stage that started them; their PIDs and ports go to the deployment's state file after every
change. A canary or a replaced stable is stopped only after the router has no request in
flight to it (and the engine itself drains on SIGTERM), so traffic changes lose no request.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common.errors import StageError
from common.settings import PROJECT_ROOT
from deploy.loadgen import LoadGenerator, LoadSpec, load_eval_prompts
from deploy.metric_sources import ScrapeMetricsSource
from deploy.model_ref import VerifiedModel
from deploy.state import (
    ServerRecord,
    load_state,
    process_start_ticks,
    save_state,
    state_path,
)
from serving.engine import EngineProcess, start_engine
from serving.process import (
    free_port,
    spawn,
    stop_process_group,
    wait_until_healthy,
)
from serving.router import DEFAULT_CANARY_LEASE_SECONDS, FaultSpec
from serving.router_admin import (
    AdminClient,
    read_admin_token,
    write_admin_token,
    write_allowed_backends,
)
from serving.vllm_engine import local_environment

logger = logging.getLogger(__name__)

ROUTER_READY_TIMEOUT_SECONDS = 60.0
DRAIN_TIMEOUT_SECONDS = 60.0
WARM_UP_REQUESTS = 16
WARM_UP_CONCURRENCY = 4
WARM_UP_MAX_SECONDS = 120.0


class LocalBackend:
    def __init__(self, home: Path, name: str, *, engine_kind: str,
                 ready_timeout_seconds: float = 300.0, max_model_len: int | None = None,
                 vllm_venv_dir: Path | None = None, enforce_eager: bool = False,
                 canary_lease_seconds: float = DEFAULT_CANARY_LEASE_SECONDS) -> None:
        self.home = home
        self.name = name
        self.engine_kind = engine_kind
        self.ready_timeout_seconds = ready_timeout_seconds
        self.max_model_len = max_model_len
        self.vllm_venv_dir = vllm_venv_dir
        self.enforce_eager = enforce_eager
        self.canary_lease_seconds = canary_lease_seconds
        self.log_dir = state_path(home, name).parent / "logs"
        self.state = load_state(home, name)

    # -- what is running ---------------------------------------------------------------------
    @property
    def router_url(self) -> str:
        if self.state.router is None:
            raise StageError("DEPLOY_ROUTER_MISSING", f"deployment {self.name} has no router")
        return self.state.router.base_url

    def running_stable(self) -> ServerRecord | None:
        return self.state.stable

    def metrics_source(self) -> ScrapeMetricsSource:
        engines = {r.role: r.base_url for r in (self.state.stable, self.state.canary) if r}
        return ScrapeMetricsSource(self.router_url, engines)

    @property
    def admin_token_path(self) -> Path:
        return state_path(self.home, self.name).parent / "router-admin.token"

    @property
    def allowed_backends_path(self) -> Path:
        return state_path(self.home, self.name).parent / "router-backends.json"

    def admin_client(self) -> AdminClient:
        router = self.state.router
        if router is None or router.admin_port is None:
            raise StageError("DEPLOY_ROUTER_MISSING",
                             f"deployment {self.name} has no router with an admin listener")
        return AdminClient(f"http://127.0.0.1:{router.admin_port}",
                           read_admin_token(self.admin_token_path))

    def save(self) -> Path:
        # The router may route only to engines this deployment records (its allow-list).
        engines = [r.base_url for r in (self.state.stable, self.state.canary) if r is not None]
        self.allowed_backends_path.parent.mkdir(parents=True, exist_ok=True)
        write_allowed_backends(self.allowed_backends_path, engines)
        return save_state(self.home, self.state)

    @property
    def endpoint(self) -> str:
        return self.router_url

    @property
    def needs_load_generator(self) -> bool:
        return True  # a loopback router: nobody but the stage sends it requests

    def track_url(self, role: str) -> str | None:
        """The track's engine itself (127.0.0.1), around the router."""
        record = {"stable": self.state.stable, "canary": self.state.canary}.get(role)
        return record.base_url if record is not None else None

    def running_stable_version(self) -> str | None:
        return self.state.stable.model_version if self.state.stable else None

    def leftover_canary_version(self) -> str | None:
        """The canary a previous (killed) deploy left: a recorded canary that still runs, or a
        canary the router still sends traffic to (its engine already dead)."""
        if self.state.canary is not None:
            return self.state.canary.model_version or "unknown"
        if self.state.router is not None and "canary" in self._admin_get("state")["backends"]:
            return "unknown (engine gone)"
        return None

    def repair(self) -> list[str]:
        """Bring back what a crash took and stop what it left: an engine a killed deploy was
        still starting is stopped; a dead router in front of a live stable is restarted (on a
        new port: the endpoint changes, and the record says so)."""
        notes = self.stop_orphan()
        if self.state.stable is not None and self.state.router is None:
            router = self.ensure_router()
            notes.append(f"the router was gone: restarted on port {router.port} "
                         f"(new endpoint {router.base_url})")
        return notes

    def stop_orphan(self) -> list[str]:
        """Stop the engine recorded as `starting` by a deploy that died before it was ready
        (load_state already dropped the record if its PID is gone or now names another
        process: a recycled PID is never signalled)."""
        orphan = self.state.starting
        if orphan is None:
            return []
        if orphan.is_alive():  # checked again right before the signal: the PID is still it
            stop_process_group(orphan.pid, grace_seconds=10)
        self.state.starting = None
        self.save()
        return [f"an engine (pid {orphan.pid}, port {orphan.port}, model "
                f"{orphan.model_uri}) left starting by an interrupted deploy was stopped"]

    def describe(self) -> dict[str, Any]:
        return {r.role: {"pid": r.pid, "port": r.port, "kind": r.kind, "log": r.log_path,
                         "model_uri": r.model_uri} for r in self.state.servers()}

    def stop_command(self) -> str:
        """`shipyard stop NAME`, naming the console script beside the interpreter that runs
        the deploy (`.venv/bin/shipyard`), so the printed line works without an activated venv."""
        script = Path(sys.executable).with_name("shipyard")
        return f"{script if script.exists() else 'shipyard'} stop {self.name}"

    # -- starting ----------------------------------------------------------------------------
    def start_stable(self, model: VerifiedModel) -> None:
        """Serve `model` as the stable track, behind a (new or running) router."""
        previous = self.state.stable
        self.start_track("stable", model.model_dir, model.served_model_name,
                         model_uri=model.model_uri, version=model.version, digest=model.digest)
        if self.state.router is None:
            self.ensure_router()
        else:
            self.route(canary_percent=0)
        if previous is not None:
            self._drain_and_stop(previous)

    def start_canary(self, model: VerifiedModel) -> None:
        self.repair()  # a canary needs the router in front of the stable
        if self.state.canary is not None:
            # Never overwrite a canary's record while it may run: stop it first.
            self.rollback_canary()
        self.start_track("canary", model.model_dir, model.served_model_name,
                         model_uri=model.model_uri, version=model.version, digest=model.digest)

    def start_track(self, role: str, model_dir: Path, served_model_name: str, *,
                    model_uri: str, version: str, digest: str) -> ServerRecord:
        self.stop_orphan()  # one `starting` slot: a leftover is stopped, never overwritten

        def record_as(record_role: str, engine: EngineProcess) -> ServerRecord:
            return ServerRecord(role=record_role, kind=engine.kind, pid=engine.pid,
                                port=engine.port, log_path=str(engine.log_path),
                                served_model_name=served_model_name, model_uri=model_uri,
                                model_version=version, model_digest=digest,
                                model_dir=str(model_dir),
                                start_ticks=process_start_ticks(engine.pid))

        def note_starting(engine: EngineProcess) -> None:
            # Saved before the minutes-long wait for health: if this process is SIGKILLed
            # now, the detached engine is still in the state file for cleanup to find.
            self.state.starting = record_as("starting", engine)
            self.save()

        try:
            engine = start_engine(
                self.engine_kind, model_dir, served_model_name, log_dir=self.log_dir,
                ready_timeout_seconds=self.ready_timeout_seconds,
                max_model_len=self.max_model_len, vllm_venv_dir=self.vllm_venv_dir,
                enforce_eager=self.enforce_eager, outlive_parent=True,
                on_spawned=note_starting,
            )
            engine.detach()
            try:
                warm_up(engine.base_url, served_model_name)
            except BaseException:
                engine.stop(grace_seconds=10)
                raise
        except BaseException:
            if self.state.starting is not None:  # stopped above or by start_engine
                self.state.starting = None
                self.save()
            raise
        record = record_as(role, engine)
        setattr(self.state, role, record)
        self.state.starting = None
        self.save()
        return record

    def ensure_router(self) -> ServerRecord:
        """Start the router if none is running, sending all traffic to the stable."""
        if self.state.router is not None:
            return self.state.router
        if self.state.stable is None:
            raise StageError("DEPLOY_NO_STABLE", "start the stable before the router")
        port, admin_port = free_port(), free_port()
        log_path = self.log_dir / f"router-{port}.log"
        write_admin_token(self.admin_token_path)
        self.save()  # the allow-list names the stable before the router reads it
        command = [sys.executable, "-m", "serving.router", "--port", str(port),
                   "--backend", f"stable={self.state.stable.base_url}", "--weight", "stable=100",
                   "--admin-port", str(admin_port),
                   "--admin-token-file", str(self.admin_token_path),
                   "--allowed-backends-file", str(self.allowed_backends_path)]
        process = spawn(command, env=local_environment(os.environ, PROJECT_ROOT),
                        log_path=log_path, cwd=PROJECT_ROOT, outlive_parent=True)
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}/health", process, pid=process.pid,
                               timeout_seconds=ROUTER_READY_TIMEOUT_SECONDS, log_path=log_path,
                               what="router")
        except BaseException:
            stop_process_group(process.pid, process, grace_seconds=5)
            raise
        self.state.router = ServerRecord(role="router", kind="router", pid=process.pid,
                                         port=port, log_path=str(log_path),
                                         admin_port=admin_port,
                                         start_ticks=process_start_ticks(process.pid))
        self.save()
        return self.state.router

    # -- traffic -----------------------------------------------------------------------------
    def route(self, *, canary_percent: int) -> None:
        """Stable gets 100 - canary_percent, canary gets canary_percent (0 removes it)."""
        stable, canary = self.state.stable, self.state.canary
        if stable is None:
            raise StageError("DEPLOY_NO_STABLE", "no stable engine to route to")
        backends = {"stable": stable.base_url}
        weights = {"stable": 100 - canary_percent}
        body: dict[str, Any] = {"backends": backends, "weights": weights}
        if canary is not None and canary_percent > 0:
            backends["canary"] = canary.base_url
            weights["canary"] = canary_percent
            # the router reverts to the stable unless renew_canary_lease comes in time
            body["lease_seconds"] = self.canary_lease_seconds
        self._admin("backends", body)

    def set_canary_weight(self, percent: int) -> None:
        self.route(canary_percent=percent)

    def renew_canary_lease(self) -> None:
        """The controller's heartbeat to the router. DEPLOY_CANARY_LEASE_LOST when the lease
        already lapsed: the router has sent the canary's traffic back to the stable."""
        client = self.admin_client()
        try:
            client.post("lease", {"lease_seconds": self.canary_lease_seconds})
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise StageError("DEPLOY_ROUTER_REFUSED", f"router refused the canary lease "
                                 f"renewal: {exc.read().decode()[:500]}") from exc
            raise StageError(
                "DEPLOY_CANARY_LEASE_LOST",
                f"deployment {self.name}: the router's canary lease "
                f"({self.canary_lease_seconds:g} s) lapsed before the controller renewed it, "
                "so the router sent all traffic back to the stable. The controller was stalled "
                "longer than deploy.canary_lease_seconds (a slow metrics scrape, a suspended "
                "process): raise it, or find what stalled it in the deploy log.") from exc
        except OSError as exc:
            raise StageError("DEPLOY_ROUTER_UNREACHABLE",
                             f"router at {client.admin_url} unreachable: {exc}") from exc

    def inject_faults(self, canary: FaultSpec | None) -> None:
        self._admin("faults", {"faults": {"canary": asdict(canary)} if canary else {}})

    def promote_canary(self) -> None:
        """All traffic to the canary, which becomes the stable; the old stable drains, stops."""
        old, new = self.state.stable, self.state.canary
        if new is None:
            raise StageError("DEPLOY_NO_CANARY", "no canary to promote")
        new.role = "stable"
        self.state.stable, self.state.canary = new, None
        self._admin("backends", {"backends": {"stable": new.base_url}, "weights": {"stable": 100}})
        self.inject_faults(None)
        self.save()
        if old is not None:
            self._drain_and_stop(old)

    def rollback_canary(self) -> None:
        """Canary weight to 0 and out of the routing table; it drains, then stops."""
        canary = self.state.canary
        if self.state.router is not None and self.state.stable is not None:
            self.route(canary_percent=0)  # also when the canary's engine is already gone
            self.inject_faults(None)  # a drill's faults end with its canary
        if canary is None:
            return
        self.state.canary = None
        self.save()
        self._drain_and_stop(canary)

    def stop_all(self) -> list[ServerRecord]:
        """Stop every server of this deployment (router first, so no new request arrives)."""
        stopped = []
        for record in (self.state.router, self.state.starting, self.state.canary,
                       self.state.stable):
            if record is not None:
                stop_process_group(record.pid, grace_seconds=30)
                stopped.append(record)
        self.state.router = self.state.stable = self.state.canary = None
        self.state.starting = None
        self.save()
        return stopped

    def _drain_and_stop(self, record: ServerRecord) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while time.monotonic() < deadline and self.state.router is not None:
            in_flight = self._admin_get("state").get("in_flight", {})
            if not in_flight.get(record.base_url):
                break
            time.sleep(0.1)
        stop_process_group(record.pid, grace_seconds=30)

    def _admin(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        client = self.admin_client()
        return _call(lambda: client.post(path, body), f"{client.admin_url}/admin/{path}")

    def _admin_get(self, path: str) -> dict[str, Any]:
        client = self.admin_client()
        return _call(lambda: client.get(path), f"{client.admin_url}/admin/{path}")


def warm_up(base_url: str, served_model_name: str) -> None:
    """A few requests straight to a new engine before it takes routed traffic: its first
    requests are slow (lazy initialisation, first-shape compilation), and a canary must be
    judged on how it serves, not on how it starts. They bypass the router, so they never
    count in the canary's numbers."""
    spec = LoadSpec(requests_per_second=50.0, concurrency=WARM_UP_CONCURRENCY,
                    max_requests=WARM_UP_REQUESTS, max_seconds=WARM_UP_MAX_SECONDS,
                    max_tokens=16)
    result = LoadGenerator(base_url, served_model_name, load_eval_prompts(limit=32),
                           spec).start().wait(WARM_UP_MAX_SECONDS + 60)
    if result.ok < result.sent or result.sent == 0:
        raise StageError("DEPLOY_WARM_UP_FAILED",
                         f"engine at {base_url} failed its warm-up requests: "
                         f"{result.to_dict()}")


def _call(send: Callable[[], dict[str, Any]], url: str) -> dict[str, Any]:
    try:
        return send()
    except urllib.error.HTTPError as exc:
        raise StageError("DEPLOY_ROUTER_REFUSED",
                         f"router refused {url}: {exc.read().decode()}") from exc
    except OSError as exc:
        raise StageError("DEPLOY_ROUTER_UNREACHABLE",
                         f"router at {url} unreachable: {exc}") from exc
