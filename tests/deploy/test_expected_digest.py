"""On a cluster the served bytes are the verified bytes: the deploy stage hands the digest it
decided on to the `fetch-and-verify` initContainer, whose `registry.cli verify` refuses any
other model, so a pod restart (or an alias moved after the apply) can only serve that digest.
Checked on the rendered objects, as the API server would receive them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from common.digests import sha256_digest
from deploy.kubernetes_backend import render_overlay, with_model
from deploy.model_ref import VerifiedModel
from registry.cli import build_parser
from registry.errors import RegistryError
from registry.verify import _digest_hex

pytestmark = pytest.mark.unit

OVERLAYS = ("infra/k8s/overlays/gpu", "infra/k8s/overlays/local-kind")
DIGEST = "ab" * 32


def _verifier(deployment: dict[str, Any]) -> dict[str, Any]:
    (init,) = [c for c in deployment["spec"]["template"]["spec"]["initContainers"]
               if c["name"] == "fetch-and-verify"]
    return init


def _expanded_argv(container: dict[str, Any]) -> list[str]:
    """The command after Kubernetes' $(VAR) expansion from the container's env."""
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)
            for arg in container["command"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("track", ["stable", "canary"])
def test_the_verifier_is_told_the_digest_deploy_verified(overlay: str, track: str) -> None:
    model = VerifiedModel("models:/shipyard-tiny/7", "7", sha256_digest(DIGEST),
                          Path("/models/current/model"), "shipyard")
    deployment = with_model(render_overlay(Path(overlay)), track, model)
    argv = _expanded_argv(_verifier(deployment))
    assert argv[:4] == ["python", "-m", "registry.cli", "verify"]
    args = build_parser({}).parse_args(argv[3:])
    assert args.expected_digest == f"sha256:{DIGEST}"
    assert args.model_uri == "models:/shipyard-tiny/7"  # the version, never a movable alias


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_pod_spec_without_a_decided_digest_cannot_verify(overlay: str) -> None:
    # As rendered (not set by deploy), the digest is empty: the verifier refuses to start.
    for obj in render_overlay(Path(overlay)):
        if obj["kind"] != "Deployment":
            continue
        args = build_parser({}).parse_args(_expanded_argv(_verifier(obj))[3:])
        assert args.expected_digest == ""
        with pytest.raises(RegistryError) as failure:
            _digest_hex(args.expected_digest)
        assert failure.value.code == "EXPECTED_DIGEST_INVALID"
