"""Autoscaling of the stable track (infra/k8s/components/autoscaling-keda, scale-to-zero,
autoscaling-hpa, stable-pdb): every autoscaled overlay renders and validates offline (the
ScaledObject against KEDA's own CRD schema, stored in tests/deploy/schemas with its source
commit; HPA, PDB and the core kinds against the Kubernetes 1.37 OpenAPI schemas), and the
split of control holds: autoscalers scale only the stable Deployment, the deploy stage only
the canary (and the route weights), and it never applies a replica count to an autoscaled
stable."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from common.digests import sha256_digest
from common.errors import StageError
from common.settings import PROJECT_ROOT
from deploy.kubernetes_backend import (
    KubernetesBackend,
    autoscaled_deployments,
    render_overlay,
    with_model,
)
from deploy.model_ref import VerifiedModel
from tests.deploy import fake_kubernetes
from tests.deploy.fake_kubernetes import FakeDynamicClient

pytestmark = pytest.mark.unit

KUBERNETES_VERSION = "1.37.0"
NS = "shipyard"
SCHEMA_DIR = Path(__file__).parent / "schemas"
CUSTOM = json.loads((SCHEMA_DIR / "custom_resources.json").read_text())
KEDA = json.loads((SCHEMA_DIR / "keda_scaledobject.json").read_text())
KEDA_OVERLAYS = ("infra/k8s/overlays/gpu-keda", "infra/k8s/overlays/gpu-keda-scale-to-zero")
HPA_OVERLAY = "infra/k8s/overlays/gpu-hpa"
AUTOSCALED = (*KEDA_OVERLAYS, HPA_OVERLAY)
ALL_OVERLAYS = sorted(str(p.relative_to(PROJECT_ROOT))
                      for p in (PROJECT_ROOT / "infra" / "k8s" / "overlays").iterdir()
                      if p.is_dir())
ADAPTER_VALUES = PROJECT_ROOT / "infra" / "k8s" / "prometheus-adapter" / "values.yaml"
AUTOSCALER_KINDS = ("ScaledObject", "HorizontalPodAutoscaler")


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields rejected wherever it lists properties: the API
    server would prune them silently (kubernetes-validate's strict mode, for the CRD)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


SCALEDOBJECT_SCHEMA = _strict(KEDA["openAPIV3Schema"])


def _validate(obj: dict[str, Any]) -> None:
    if obj["kind"] == "ScaledObject":
        assert obj["apiVersion"] == f"keda.sh/{KEDA['source']['version']}"
        jsonschema.validate(obj, SCALEDOBJECT_SCHEMA)
    elif obj["kind"] in CUSTOM:
        jsonschema.validate(obj, {**CUSTOM[obj["kind"]], "$defs": CUSTOM["$defs"]})
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def _only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind]
    return found


def _deployment(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
    return found


@pytest.fixture(scope="module")
def renders() -> dict[str, list[dict[str, Any]]]:
    return {overlay: render_overlay(Path(overlay)) for overlay in ALL_OVERLAYS}


def test_the_keda_schema_is_keda_s_own() -> None:
    assert KEDA["source"]["commit"] == "8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a"
    assert KEDA["source"]["path"] == "config/crd/bases/keda.sh_scaledobjects.yaml"
    spec = KEDA["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["scaleTargetRef", "triggers"]


@pytest.mark.parametrize("overlay", AUTOSCALED)
def test_autoscaled_overlays_render_and_pass_their_schemas(
        renders: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = renders[overlay]
    kinds = sorted(o["kind"] for o in objects)
    autoscaler = "ScaledObject" if overlay in KEDA_OVERLAYS else "HorizontalPodAutoscaler"
    assert kinds == sorted(["Deployment", "Deployment", "HTTPRoute", "NetworkPolicy",
                            "PodMonitor", "PrometheusRule", "Service", "Service",
                            "PodDisruptionBudget", autoscaler])
    for obj in objects:
        assert obj["metadata"]["namespace"] == NS
        _validate(obj)


def test_the_strict_scaledobject_schema_rejects_a_misspelt_field(
        renders: dict[str, list[dict[str, Any]]]) -> None:
    scaled = copy.deepcopy(_only(renders[KEDA_OVERLAYS[0]], "ScaledObject"))
    scaled["spec"]["minReplicas"] = 1  # the HPA's spelling, not KEDA's
    with pytest.raises(jsonschema.ValidationError):
        _validate(scaled)
    scaled = copy.deepcopy(_only(renders[KEDA_OVERLAYS[0]], "ScaledObject"))
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 4  # metadata values are strings
    with pytest.raises(jsonschema.ValidationError):
        _validate(scaled)


@pytest.mark.parametrize("overlay", KEDA_OVERLAYS)
def test_keda_triggers_read_vllm_queueing_and_kv_cache_of_the_stable_track(
        renders: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    scaled = _only(renders[overlay], "ScaledObject")
    queries = {t["name"]: t["metadata"]["query"] for t in scaled["spec"]["triggers"]}
    assert "vllm:num_requests_waiting" in queries["requests-waiting"]
    assert "vllm:kv_cache_usage_perc" in queries["kv-cache-usage"]
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "prometheus"
        # every key is one KEDA's prometheus scaler parses (a typo would be ignored by it)
        assert set(trigger["metadata"]) <= set(KEDA["prometheusTriggerMetadata"])
        for key in ("threshold", "activationThreshold"):
            if key in trigger["metadata"]:
                float(trigger["metadata"][key])
        query = trigger["metadata"]["query"]
        assert "gpu_cache_usage_perc" not in query  # no longer emitted by default
        assert 'track="canary"' not in query
        if query.startswith(("sum(vllm:", "avg(vllm:")):
            assert 'track="stable"' in query


def test_scale_to_zero_is_opt_in_with_activation_thresholds(
        renders: dict[str, list[dict[str, Any]]]) -> None:
    always_on = _only(renders["infra/k8s/overlays/gpu-keda"], "ScaledObject")["spec"]
    assert always_on["minReplicaCount"] >= 2  # the PDB then lets a drain take one at a time
    to_zero = _only(renders["infra/k8s/overlays/gpu-keda-scale-to-zero"], "ScaledObject")["spec"]
    assert to_zero["minReplicaCount"] == 0
    assert all("activationThreshold" in t["metadata"] for t in to_zero["triggers"])
    # waking from zero needs a signal that exists with no vLLM pod: the gateway's
    names = [t["name"] for t in to_zero["triggers"]]
    assert "gateway-requests" in names
    assert "vllm:" not in next(t for t in to_zero["triggers"]
                               if t["name"] == "gateway-requests")["metadata"]["query"]


def test_no_autoscaler_targets_the_canary_in_any_overlay(
        renders: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, objects in renders.items():
        autoscalers = [o for o in objects if o["kind"] in AUTOSCALER_KINDS]
        for autoscaler in autoscalers:
            assert autoscaler["spec"]["scaleTargetRef"] == {
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm-stable"}, overlay
        stable = _deployment(objects, "vllm-stable")
        canary = _deployment(objects, "vllm-canary")
        assert canary["spec"]["replicas"] == 0, overlay  # the deploy stage scales it up
        if autoscalers:
            assert overlay in AUTOSCALED
            assert autoscaled_deployments(objects) == {"vllm-stable"}
            # the autoscaler owns the stable's replicas: the manifest leaves them unset
            assert "replicas" not in stable["spec"], overlay
        else:
            assert stable["spec"]["replicas"] >= 1


@pytest.mark.parametrize("overlay", AUTOSCALED)
def test_the_pdb_covers_the_stable_pods_only(
        renders: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = renders[overlay]
    pdb = _only(objects, "PodDisruptionBudget")
    selector = pdb["spec"]["selector"]["matchLabels"]
    stable_pods = _deployment(objects, "vllm-stable")["spec"]["template"]["metadata"]["labels"]
    canary_pods = _deployment(objects, "vllm-canary")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= stable_pods.items()
    assert not selector.items() <= canary_pods.items()
    assert pdb["spec"]["maxUnavailable"] == 1


def test_every_hpa_metric_is_served_by_the_adapter_rules(
        renders: dict[str, list[dict[str, Any]]]) -> None:
    hpa = _only(renders[HPA_OVERLAY], "HorizontalPodAutoscaler")
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]
    served = {"Pods": {r["name"]["as"] for r in rules["custom"]},
              "External": {r["name"]["as"] for r in rules["external"]}}
    asked = {(m["type"], m[m["type"].lower()]["metric"]["name"]) for m in hpa["spec"]["metrics"]}
    assert asked == {("Pods", "vllm_num_requests_waiting"),
                     ("External", "vllm_kv_cache_usage_perc")}
    for kind, name in asked:
        assert name in served[kind]
    series = " ".join(r["seriesQuery"] for r in rules["custom"] + rules["external"])
    assert "vllm:kv_cache_usage_perc" in series and "gpu_cache_usage_perc" not in series


# -- the deploy stage's side of the split --------------------------------------------------
def _model(version: str) -> VerifiedModel:
    return VerifiedModel(f"models:/shipyard-tiny/{version}", version,
                         sha256_digest(version * 64),
                         Path("/models/current/model"), "shipyard")


@pytest.fixture
def autoscaled_backend(monkeypatch: pytest.MonkeyPatch,
                       renders: dict[str, list[dict[str, Any]]]) -> KubernetesBackend:
    monkeypatch.setattr(fake_kubernetes, "KNOWN_KINDS", fake_kubernetes.KNOWN_KINDS | {
        ("keda.sh/v1alpha1", "ScaledObject"), ("policy/v1", "PodDisruptionBudget")})
    return KubernetesBackend(FakeDynamicClient(), renders["infra/k8s/overlays/gpu-keda"],
                             namespace=NS, endpoint="http://gateway.example",
                             prometheus_url="http://prometheus.example:9090",
                             poll_seconds=0.0, sleep=lambda _: None)


def test_the_deploy_stage_never_sets_the_replicas_of_an_autoscaled_stable(
        autoscaled_backend: KubernetesBackend) -> None:
    backend = autoscaled_backend
    fake: FakeDynamicClient = backend.client
    backend.start_stable(_model("1"))
    assert ("apply", "ScaledObject", "vllm-stable") in fake.calls
    assert ("apply", "PodDisruptionBudget", "vllm-stable") in fake.calls
    assert "replicas" not in fake.object("Deployment", NS, "vllm-stable")["spec"]
    backend.start_canary(_model("2"))
    assert fake.object("Deployment", NS, "vllm-canary")["spec"]["replicas"] == 1
    backend.set_canary_weight(50)
    backend.promote_canary()
    stable = fake.object("Deployment", NS, "vllm-stable")
    assert "replicas" not in stable["spec"]
    assert stable["spec"]["template"]["metadata"]["annotations"][
        "shipyard.dev/model-version"] == "2"
    assert fake.object("Deployment", NS, "vllm-canary")["spec"]["replicas"] == 0
    assert backend.route_weights() == {"vllm-stable": 100, "vllm-canary": 0}


def test_without_an_autoscaler_the_stable_gets_its_replicas(
        renders: dict[str, list[dict[str, Any]]]) -> None:
    objects = renders["infra/k8s/overlays/gpu"]
    assert with_model(objects, "stable", _model("1"))["spec"]["replicas"] == 1


def test_an_overlay_that_autoscales_the_canary_is_refused(
        renders: dict[str, list[dict[str, Any]]]) -> None:
    objects = copy.deepcopy(renders["infra/k8s/overlays/gpu-hpa"])
    _only(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] = "vllm-canary"
    with pytest.raises(StageError) as caught:
        KubernetesBackend(FakeDynamicClient(), objects, namespace=NS,
                          endpoint="http://gateway.example",
                          prometheus_url="http://prometheus.example:9090")
    assert caught.value.code == "DEPLOY_MANIFEST_INVALID"
