"""An in-memory stand-in for the kubernetes dynamic client: exactly the four calls
KubernetesBackend makes (`resources.get`, `server_side_apply`, `get`, `patch`), with the
API server's behaviour that matters to it: apply needs a field manager and bumps
`metadata.generation` when the spec changes, a missing object raises NotFoundError, a merge
patch follows RFC 7386, and a Deployment controller reports the rollout (or never does).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.rest import ApiException
from kubernetes.dynamic.exceptions import NotFoundError

KNOWN_KINDS = {
    ("apps/v1", "Deployment"), ("v1", "Service"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
}


@dataclass(frozen=True)
class FakeResource:
    api_version: str
    kind: str


class FakeResources:
    def get(self, *, api_version: str, kind: str) -> FakeResource:
        if (api_version, kind) not in KNOWN_KINDS:
            raise ValueError(f"the server does not serve {api_version} {kind}")
        return FakeResource(api_version, kind)


class FakeInstance:
    def __init__(self, obj: dict[str, Any]) -> None:
        self._obj = copy.deepcopy(obj)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._obj)


@dataclass
class FakeDynamicClient:
    # False: Deployments never become available (a stuck rollout)
    rollouts_succeed: bool = True
    store: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    resources: FakeResources = field(default_factory=FakeResources)

    def server_side_apply(self, resource: FakeResource, body: dict[str, Any] | None = None,
                          name: str | None = None, namespace: str | None = None,
                          force_conflicts: bool | None = None,
                          field_manager: str | None = None) -> FakeInstance:
        assert body is not None and name == body["metadata"]["name"]
        if not field_manager:
            raise ApiException(status=422, reason="fieldManager is required for apply")
        assert (body["apiVersion"], body["kind"]) == (resource.api_version, resource.kind)
        self.calls.append(("apply", resource.kind, str(name)))
        key = (resource.kind, namespace or "", str(name))
        old = self.store.get(key)
        obj = copy.deepcopy(body)
        generation = int((old or {}).get("metadata", {}).get("generation", 0))
        changed = old is None or old.get("spec") != obj.get("spec")
        obj["metadata"]["generation"] = generation + (1 if changed else 0)
        if resource.kind == "Deployment":
            obj["status"] = self._deployment_status(obj, old)
        self.store[key] = obj
        return FakeInstance(obj)

    def get(self, resource: FakeResource, name: str | None = None,
            namespace: str | None = None) -> FakeInstance:
        self.calls.append(("get", resource.kind, str(name)))
        key = (resource.kind, namespace or "", str(name))
        if key not in self.store:
            raise NotFoundError(ApiException(status=404, reason="Not Found"))
        return FakeInstance(self.store[key])

    def patch(self, resource: FakeResource, body: dict[str, Any] | None = None,
              name: str | None = None, namespace: str | None = None,
              content_type: str | None = None) -> FakeInstance:
        assert content_type == "application/merge-patch+json", content_type
        self.calls.append(("patch", resource.kind, str(name)))
        key = (resource.kind, namespace or "", str(name))
        if key not in self.store:
            raise NotFoundError(ApiException(status=404, reason="Not Found"))
        self.store[key] = _merge_patch(self.store[key], body or {})
        return FakeInstance(self.store[key])

    def _deployment_status(self, obj: dict[str, Any], old: dict[str, Any] | None
                           ) -> dict[str, Any]:
        replicas = int(obj["spec"].get("replicas") or 0)
        if self.rollouts_succeed:
            return {"observedGeneration": obj["metadata"]["generation"], "replicas": replicas,
                    "updatedReplicas": replicas, "availableReplicas": replicas}
        return copy.deepcopy((old or {}).get("status") or {"observedGeneration": 0})

    def object(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.store[(kind, namespace, name)]


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result
