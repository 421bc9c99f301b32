"""GitHub Actions least privilege (.github/workflows/*.yml): actions pinned by full commit SHA,
no default token permissions, checkout without persisted credentials, and no write or OIDC
permission in a job that installs or runs third-party code. checkov (`make checkov`) scans the
same files; these are the project's own rules on top of its defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.settings import PROJECT_ROOT

WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.y*ml"))
PINNED_USES = re.compile(r"\s*(?:-\s+)?uses:\s+([\w.-]+/[\w./-]+)@([0-9a-f]{40})"
                         r"\s+#\s+v\d+(\.\d+)*\s*")
# steps that install or execute dependency code
THIRD_PARTY_CODE = re.compile(r"make (install|test|pipeline)|\.ci/run|pip install|uv pip"
                              r"|docker build|pyflyte|npm |\.venv/bin/")
PRIVILEGED = ("id-token", "packages", "attestations", "contents", "actions", "deployments",
              "pull-requests", "security-events", "statuses", "checks", "issues")

pytestmark = pytest.mark.unit


def _load(path: Path) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as True; the tests do not need it
    return yaml.safe_load(path.read_text())


@pytest.fixture(params=WORKFLOWS, ids=lambda p: p.name)
def workflow(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_workflows_exist() -> None:
    assert WORKFLOWS


def test_every_action_is_pinned_by_commit_sha(workflow: Path) -> None:
    for number, line in enumerate(workflow.read_text().splitlines(), 1):
        if re.match(r"\s*(-\s+)?uses:", line):
            assert PINNED_USES.fullmatch(line), (f"{workflow.name}:{number}: pin by 40-hex "
                                                 f"commit SHA with `# vX.Y.Z`: {line.strip()}")


def test_no_default_token_permissions(workflow: Path) -> None:
    data = _load(workflow)
    assert "permissions" in data, "set top-level `permissions: {}`"
    top = data["permissions"]
    assert top == {} or (isinstance(top, dict) and set(top.values()) <= {"read", "none"}), top
    for name, job in data["jobs"].items():
        assert "permissions" in job, f"job {name}: declare its permissions"


def test_checkout_does_not_persist_credentials(workflow: Path) -> None:
    for name, job in _load(workflow)["jobs"].items():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, name


def test_jobs_running_dependency_code_hold_no_write_or_oidc_token(workflow: Path) -> None:
    for name, job in _load(workflow)["jobs"].items():
        permissions = job.get("permissions") or {}
        runs = "\n".join(str(step.get("run", "")) for step in job.get("steps", []))
        writes = sorted(k for k, v in permissions.items() if v == "write")
        if THIRD_PARTY_CODE.search(runs):
            assert not writes, f"job {name} runs dependency code and holds {writes}"
        if permissions.get("id-token") == "write":
            uses = [str(step.get("uses", "")) for step in job.get("steps", [])]
            assert not [u for u in uses if u.startswith("actions/checkout@")], \
                f"job {name}: the signing job checks out no code"
        assert set(permissions) <= set(PRIVILEGED), permissions
