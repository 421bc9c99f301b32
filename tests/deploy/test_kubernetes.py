"""Kubernetes: the kustomize overlays render and validate offline (kubectl kustomize, the
Kubernetes OpenAPI schemas via kubernetes-validate, strict schemas for the custom resources),
the backend drives an in-memory API that implements exactly the client calls it uses, and an
opt-in test dry-runs the manifests against a real cluster when KUBECONFIG is set."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from common.digests import sha256_digest
from common.errors import StageError
from deploy.kubernetes_backend import (
    ANNOTATION_URI,
    FIELD_MANAGER,
    KubernetesBackend,
    render_overlay,
    with_model,
)
from deploy.model_ref import VerifiedModel
from serving.router import FaultSpec
from tests.deploy.fake_kubernetes import FakeDynamicClient

KUBERNETES_VERSION = "1.37.0"
OVERLAYS = ("infra/k8s/overlays/gpu", "infra/k8s/overlays/local-kind")
SCHEMAS = json.loads((Path(__file__).parent / "schemas" / "custom_resources.json").read_text())
NS = "shipyard"


def _model(version: str) -> VerifiedModel:
    return VerifiedModel(f"models:/shipyard-tiny/{version}", version,
                         sha256_digest(version * 64),
                         Path("/models/current/model"), "shipyard")


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render_overlay(Path(request.param))


@pytest.mark.unit
def test_rendered_objects_pass_their_schemas(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in rendered)
    assert kinds == ["Deployment", "Deployment", "HTTPRoute", "NetworkPolicy", "PodMonitor",
                     "PrometheusRule", "Service", "Service"]
    for obj in rendered:
        assert obj["metadata"]["namespace"] == NS
        if obj["kind"] in SCHEMAS:
            schema = {**SCHEMAS[obj["kind"]], "$defs": SCHEMAS["$defs"]}
            jsonschema.validate(obj, schema)
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.unit
def test_objects_reference_each_other_consistently(rendered: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in _by_kind(rendered, "Deployment")}
    services = {s["metadata"]["name"]: s for s in _by_kind(rendered, "Service")}
    [route] = _by_kind(rendered, "HTTPRoute")
    [monitor] = _by_kind(rendered, "PodMonitor")
    refs = route["spec"]["rules"][0]["backendRefs"]
    assert {r["name"]: r["weight"] for r in refs} == {"vllm-stable": 100, "vllm-canary": 0}
    for ref in refs:  # every backend is a Service port that selects its track's pods
        service = services[ref["name"]]
        assert ref["port"] in [p["port"] for p in service["spec"]["ports"]]
        pod_labels = deployments[ref["name"]]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert deployments["vllm-canary"]["spec"]["replicas"] == 0
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        vllm = pod["containers"][0]
        port_names = [p["name"] for p in vllm["ports"]]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert vllm[probe]["httpGet"] == {"path": "/health", "port": "http"}
        assert "http" in port_names and monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
        sleep = int(vllm["lifecycle"]["preStop"]["exec"]["command"][-1].split()[-1])
        assert pod["terminationGracePeriodSeconds"] > sleep  # drain time after the preStop
        assert pod["initContainers"][0]["name"] == "fetch-and-verify"  # fail-closed on-cluster


@pytest.mark.unit
def test_gpu_overlay_requests_a_gpu_per_pod() -> None:
    for deployment in _by_kind(render_overlay(Path(OVERLAYS[0])), "Deployment"):
        resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == "1"
        assert resources["requests"]["nvidia.com/gpu"] == "1"


@pytest.fixture
def backend() -> KubernetesBackend:
    return KubernetesBackend(FakeDynamicClient(), render_overlay(Path(OVERLAYS[0])),
                             namespace=NS, endpoint="http://gateway.example",
                             prometheus_url="http://prometheus.example:9090",
                             poll_seconds=0.0, sleep=lambda _: None)


def _fake(backend: KubernetesBackend) -> FakeDynamicClient:
    return backend.client


@pytest.mark.unit
def test_first_stable_is_applied_server_side_and_takes_all_traffic(
        backend: KubernetesBackend) -> None:
    assert backend.running_stable_version() is None
    backend.start_stable(_model("1"))
    fake = _fake(backend)
    stable = fake.object("Deployment", NS, "vllm-stable")
    assert stable["spec"]["template"]["metadata"]["annotations"][ANNOTATION_URI] == \
        "models:/shipyard-tiny/1"
    init_env = stable["spec"]["template"]["spec"]["initContainers"][0]["env"]
    assert {"name": "SHIPYARD_MODEL_URI", "value": "models:/shipyard-tiny/1"} in init_env
    assert backend.running_stable_version() == "1"
    assert backend.route_weights() == {"vllm-stable": 100, "vllm-canary": 0}
    applied = {kind for op, kind, _ in fake.calls if op == "apply"}
    assert applied == {"Deployment", "Service", "HTTPRoute", "PodMonitor", "PrometheusRule",
                       "NetworkPolicy"}
    assert FIELD_MANAGER == "shipyard-deploy"


@pytest.mark.unit
def test_canary_steps_then_promotion(backend: KubernetesBackend) -> None:
    backend.start_stable(_model("1"))
    backend.start_canary(_model("2"))
    fake = _fake(backend)
    assert fake.object("Deployment", NS, "vllm-canary")["spec"]["replicas"] == 1
    for percent in (10, 50, 100):
        backend.set_canary_weight(percent)
        assert backend.route_weights() == {"vllm-stable": 100 - percent, "vllm-canary": percent}
    route = fake.object("HTTPRoute", NS, "shipyard")
    assert route["spec"]["rules"][0]["timeouts"] == {"request": "300s"}  # patch kept the rest
    backend.promote_canary()
    assert backend.running_stable_version() == "2"
    assert fake.object("Deployment", NS, "vllm-canary")["spec"]["replicas"] == 0
    assert backend.route_weights() == {"vllm-stable": 100, "vllm-canary": 0}


@pytest.mark.unit
def test_rollback_sends_all_traffic_to_stable_and_scales_canary_down(
        backend: KubernetesBackend) -> None:
    backend.start_stable(_model("1"))
    backend.start_canary(_model("3"))
    backend.set_canary_weight(50)
    backend.rollback_canary()
    fake = _fake(backend)
    assert backend.route_weights() == {"vllm-stable": 100, "vllm-canary": 0}
    assert fake.object("Deployment", NS, "vllm-canary")["spec"]["replicas"] == 0
    assert backend.running_stable_version() == "1"


@pytest.mark.unit
def test_a_rollout_that_never_becomes_available_times_out(backend: KubernetesBackend) -> None:
    backend.client = FakeDynamicClient(rollouts_succeed=False)
    backend.rollout_timeout_seconds = 0.05
    with pytest.raises(StageError) as caught:
        backend.start_stable(_model("1"))
    assert caught.value.code == "DEPLOY_ROLLOUT_TIMEOUT"


@pytest.mark.unit
def test_fault_drills_are_refused_on_a_cluster(backend: KubernetesBackend) -> None:
    assert backend.needs_load_generator is False  # real clients are the traffic
    backend.inject_faults(None)  # nothing to clear: no client call, no error
    assert _fake(backend).calls == []
    with pytest.raises(StageError) as caught:
        backend.inject_faults(FaultSpec(added_latency_seconds=1.0))
    assert caught.value.code == "CONFIG_INVALID"


@pytest.mark.unit
def test_with_model_does_not_touch_the_rendered_objects() -> None:
    objects = render_overlay(Path(OVERLAYS[0]))
    before = json.dumps(objects, sort_keys=True)
    with_model(objects, "canary", _model("9"))
    assert json.dumps(objects, sort_keys=True) == before


@pytest.mark.integration
@pytest.mark.skipif(not os.environ.get("KUBECONFIG"),
                    reason="opt-in: set KUBECONFIG to dry-run the manifests on a real cluster")
def test_manifests_dry_run_on_a_real_cluster() -> None:
    """Server-side apply with dryRun=All: the API server (and its installed CRDs: Gateway
    API, Prometheus Operator) validates every object; nothing is persisted."""
    from kubernetes import config
    from kubernetes.client import ApiClient
    from kubernetes.dynamic import DynamicClient

    config.load_kube_config()
    client = DynamicClient(ApiClient())
    namespace = os.environ.get("SHIPYARD_TEST_NAMESPACE", "default")
    for obj in render_overlay(Path(OVERLAYS[1])):
        obj["metadata"]["namespace"] = namespace
        resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        client.server_side_apply(resource, body=obj, name=obj["metadata"]["name"],
                                 namespace=namespace, field_manager=FIELD_MANAGER,
                                 force_conflicts=True, dry_run="All")
