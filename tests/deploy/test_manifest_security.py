"""Cluster security of what is actually deployed: every kustomize overlay, rendered with
kubectl exactly as the deploy stage renders it, must run its pods locked down (non-root high
UID, read-only root filesystem, no privilege escalation, no capabilities, RuntimeDefault
seccomp, no service-account token), bound every container (CPU, memory, ephemeral storage;
init containers too; every emptyDir sized), pin every image by digest (the verifier's first),
fence the vLLM pods with a NetworkPolicy, and require vLLM's API key from a Secret.

checkov (`make checkov`) scans the same rendered output; these tests state the project's own
rules, which a scanner's defaults do not cover (digest on the verifier, sizeLimit on every
emptyDir, the API-key wiring, the NetworkPolicy's shape)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.settings import PROJECT_ROOT
from deploy.kubernetes_backend import render_overlay

OVERLAYS = sorted(str(p.relative_to(PROJECT_ROOT))
                  for p in (PROJECT_ROOT / "infra" / "k8s" / "overlays").iterdir() if p.is_dir())
DIGEST_PINNED = re.compile(r"[a-z0-9][a-z0-9./_:-]*@sha256:[0-9a-f]{64}")
MIN_UID = 10000
API_KEY_SECRET = "shipyard-vllm-api-key"

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render_overlay(Path(request.param))


def _pods(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    workloads = [o for o in objects if o["kind"] in
                 ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet")]
    assert workloads, "the overlay renders no workload"
    for obj in workloads:
        yield obj["metadata"]["name"], obj["spec"]["template"]


def _containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec["containers"]


def test_overlays_are_found() -> None:
    assert {"infra/k8s/overlays/gpu", "infra/k8s/overlays/local-kind"} <= set(OVERLAYS)


def test_pods_run_non_root_without_a_service_account_token(
        rendered: list[dict[str, Any]]) -> None:
    for name, template in _pods(rendered):
        spec = template["spec"]
        assert spec.get("automountServiceAccountToken") is False, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") \
            and not spec.get("hostIPC"), name
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["runAsUser"] >= MIN_UID and pod_sc["runAsGroup"] >= MIN_UID, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name


def test_every_container_is_locked_down(rendered: list[dict[str, Any]]) -> None:
    for name, template in _pods(rendered):
        for container in _containers(template["spec"]):
            where = f"{name}/{container['name']}"
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc.get("privileged", False) is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= MIN_UID, where
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where


def test_every_container_has_requests_and_limits(rendered: list[dict[str, Any]]) -> None:
    for name, template in _pods(rendered):
        for container in _containers(template["spec"]):
            where = f"{name}/{container['name']}"
            resources = container["resources"]
            for kind in ("cpu", "memory", "ephemeral-storage"):
                assert kind in resources["requests"], f"{where}: no {kind} request"
                assert kind in resources["limits"], f"{where}: no {kind} limit"


def test_writable_paths_are_sized_empty_dirs(rendered: list[dict[str, Any]]) -> None:
    for name, template in _pods(rendered):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        for volume in volumes.values():
            assert "hostPath" not in volume, f"{name}: hostPath volume {volume['name']}"
            if "emptyDir" in volume:
                assert volume["emptyDir"].get("sizeLimit"), \
                    f"{name}: emptyDir {volume['name']} has no sizeLimit"
        vllm = next(c for c in template["spec"]["containers"] if c["name"] == "vllm")
        mounts = {m["mountPath"]: m["name"] for m in vllm["volumeMounts"]}
        env = {e["name"]: e.get("value") for e in vllm["env"]}
        # vLLM's writable paths: /tmp, the caches under HOME, shared memory
        for path in ("/tmp", env["HOME"], "/dev/shm"):
            assert path in mounts and "emptyDir" in volumes[mounts[path]], f"{name}: {path}"
        for var in ("XDG_CACHE_HOME", "VLLM_CACHE_ROOT", "HF_HOME", "TRITON_CACHE_DIR",
                    "TORCHINDUCTOR_CACHE_DIR"):
            assert env[var].startswith(env["HOME"]), f"{name}: {var} outside the cache volume"


def test_every_image_is_pinned_by_digest_the_verifier_first(
        rendered: list[dict[str, Any]]) -> None:
    for name, template in _pods(rendered):
        spec = template["spec"]
        verifier = spec["initContainers"][0]
        assert verifier["name"] == "fetch-and-verify", name
        assert DIGEST_PINNED.fullmatch(verifier["image"]), \
            f"{name}: the verifier's image {verifier['image']!r} is not pinned by @sha256"
        for container in _containers(spec):
            assert DIGEST_PINNED.fullmatch(container["image"]), \
                f"{name}/{container['name']}: image {container['image']!r} not pinned by digest"


def test_vllm_requires_an_api_key_from_a_secret(rendered: list[dict[str, Any]]) -> None:
    assert not [o for o in rendered if o["kind"] == "Secret"], "no Secret belongs in the manifests"
    for name, template in _pods(rendered):
        vllm = next(c for c in template["spec"]["containers"] if c["name"] == "vllm")
        [key] = [e for e in vllm["env"] if e["name"] == "VLLM_API_KEY"]
        assert "value" not in key, f"{name}: the API key is a literal"
        ref = key["valueFrom"]["secretKeyRef"]
        assert ref["name"] == API_KEY_SECRET and ref.get("optional", False) is False, name
        assert not [a for a in vllm.get("args", []) if a.startswith("--api-key")], \
            f"{name}: --api-key in the arguments (visible in the process list)"
    [route] = [o for o in rendered if o["kind"] == "HTTPRoute"]
    for rule in route["spec"]["rules"]:  # a header filter would put the key in the manifest
        for flt in rule.get("filters", []):
            headers = flt.get("requestHeaderModifier", {})
            names = [h["name"].lower() for h in headers.get("set", []) + headers.get("add", [])]
            assert "authorization" not in names, "a literal Authorization header in the route"


def test_a_network_policy_fences_the_vllm_pods(rendered: list[dict[str, Any]]) -> None:
    policies = [o for o in rendered if o["kind"] == "NetworkPolicy"]
    assert policies, "no NetworkPolicy"
    for name, template in _pods(rendered):
        labels = template["metadata"]["labels"]
        selecting = [p for p in policies
                     if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        assert selecting, f"{name}: no NetworkPolicy selects its pods"
        for policy in selecting:
            spec = policy["spec"]
            assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
            for rule in spec["ingress"]:  # every source is named; only the serving port
                assert rule["from"] and rule["ports"] == [{"port": "http", "protocol": "TCP"}]
                for peer in rule["from"]:
                    assert "ipBlock" not in peer
                    assert peer["namespaceSelector"]["matchLabels"] and peer["podSelector"]
            for rule in spec["egress"]:  # DNS and the model store only: no open egress
                assert rule["to"] and rule["ports"]
                for peer in rule["to"]:
                    if "ipBlock" in peer:
                        network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                        assert network.prefixlen >= 8, f"egress to {network} is too wide"
                    else:
                        assert peer["namespaceSelector"]["matchLabels"]
            egress_ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
            assert egress_ports <= {53, 443, 5000}, egress_ports


def test_checkov_suppressions_are_justified(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        for key, value in (obj["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                assert re.fullmatch(r"CKV2?_K8S_\d+", check), value
                assert len(reason.split()) >= 8, f"{check}: the suppression needs a reason"


IMAGE_DIR = PROJECT_ROOT / "infra" / "image"


def test_task_image_runs_non_root_from_a_digest_pinned_base() -> None:
    dockerfile = (IMAGE_DIR / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    froms = [line for line in lines if line.upper().startswith("FROM ")]
    base_args = {m.group(1): m.group(2) for line in lines
                 if (m := re.match(r"ARG\s+(\w+)=(\S+)", line))}
    for line in froms:
        image = line.split()[1]
        image = base_args.get(image.strip("${}"), image)
        assert DIGEST_PINNED.fullmatch(image), f"base image {image!r} not pinned by digest"
    users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
    assert users, "the image runs as root: no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= MIN_UID, f"USER {users[-1]}: use a numeric high UID"
    # no build-time secrets: nothing token-like in ARG/ENV, no secret files copied in
    secretish = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|CREDENTIAL)", re.I)
    for line in lines:
        if line.upper().startswith(("ARG ", "ENV ")):
            assert not secretish.search(line), f"secret-like build variable: {line}"
    spec = (IMAGE_DIR / "image_spec.py").read_text()
    assert not secretish.search(spec.split('"""', 2)[-1]), "secret-like value in image_spec.py"
