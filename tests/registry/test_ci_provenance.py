"""Keyless CI provenance (.github/workflows/ci.yml model-build -> model-provenance-sign ->
model-provenance-verify): the signing job's own jq script, run here on the subjects file a real
registration produces, builds a statement that `check_ci_statement` accepts, and a statement
about other bytes is refused. Signing itself (Fulcio, Rekor, the OIDC token) needs GitHub
Actions and the network; that part runs only in CI."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.settings import PROJECT_ROOT
from registry.ci_provenance import check_ci_statement, check_subjects
from registry.cli import main
from registry.errors import RegistryError
from tests.registry.conftest import Store, register

pytestmark = pytest.mark.integration

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "ci.yml"
REPO = "https://github.com/acme/shipyard"
SHA = "0123456789abcdef0123456789abcdef01234567"


def _jobs() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]


def _statement_script() -> str:
    steps = _jobs()["model-provenance-sign"]["steps"]
    (step,) = [s for s in steps if s.get("name") == "Gate the subjects and build the statement"]
    return str(step["run"])


def _build_statement(workdir: Path, model_digest: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"], "MODEL_DIGEST": model_digest,
        "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "acme/shipyard",
        "GITHUB_SHA": SHA, "GITHUB_REF": "refs/heads/main",
        "GITHUB_WORKFLOW_REF": "acme/shipyard/.github/workflows/ci.yml@refs/heads/main",
        "GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "1",
    }
    return subprocess.run(["bash", "-c", _statement_script()], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def subjects(
    store: Store, tiny_model_dir: Path, dataset_files: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """`python -m registry.cli ci-subjects` on a freshly registered (key-mode) version."""
    registered = register(store, tiny_model_dir, dataset_files, "t-ci-provenance")
    out = tmp_path_factory.mktemp("ci") / "ci-subjects.json"
    code = main(["ci-subjects", f"models:/t-ci-provenance/{registered.version}",
                 "--tracking-uri", store.tracking_uri, "--public-key", str(store.public_key),
                 "--policy", str(store.key_dir / "trust-policy.yaml"), "--out", str(out)])
    assert code == 0
    return dict(json.loads(out.read_text()))


def test_subjects_name_the_verified_version_and_its_signed_files(
    subjects: dict[str, Any], store: Store
) -> None:
    assert subjects["model_name"] == "t-ci-provenance"
    assert subjects["provenance"]["name"] == "provenance.dsse.json"
    assert subjects["eval_attestation"]["name"] == "eval.dsse.json"
    check_subjects(subjects)


def test_signing_jobs_jq_statement_passes_the_verifier(
    subjects: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "ci-subjects.json").write_text(json.dumps(subjects))
    done = _build_statement(tmp_path, subjects["model_digest"])
    assert done.returncode == 0, done.stderr
    statement = json.loads((tmp_path / "model-provenance.statement.json").read_text())
    check_ci_statement(statement, subjects, repository=REPO, commit=SHA)
    builder = statement["predicate"]["runDetails"]["builder"]["id"]
    assert builder == f"{REPO}/.github/workflows/ci.yml@refs/heads/main"

    for mutate, wrong in (
        (lambda s: s["subject"][0]["digest"].update(sha256="0" * 64), "subject"),
        (lambda s: s["subject"].append(copy.deepcopy(s["subject"][0])), "subject"),
        (lambda s: s["predicate"]["buildDefinition"]["resolvedDependencies"][1]["digest"]
         .update(sha256="1" * 64), "provenance"),
        (lambda s: s["predicate"]["buildDefinition"]["resolvedDependencies"].pop(), "eval"),
        (lambda s: s["predicate"]["buildDefinition"]["internalParameters"]
         .update(model_version="999"), "version"),
    ):
        bad = copy.deepcopy(statement)
        mutate(bad)
        with pytest.raises(RegistryError) as info:
            check_ci_statement(bad, subjects, repository=REPO, commit=SHA)
        assert info.value.code == "CI_PROVENANCE_MISMATCH", wrong
    with pytest.raises(RegistryError, match="another commit"):
        check_ci_statement(statement, subjects, repository=REPO, commit="f" * 40)
    with pytest.raises(RegistryError, match="another repository"):
        check_ci_statement(statement, subjects, repository="https://github.com/evil/fork")


def test_signing_job_refuses_subjects_it_was_not_handed(
    subjects: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "ci-subjects.json").write_text(json.dumps(subjects))
    assert _build_statement(tmp_path, "a" * 64).returncode != 0  # digest output differs
    forged = dict(subjects, model_name="other model; rm -rf /")
    (tmp_path / "ci-subjects.json").write_text(json.dumps(forged))
    assert _build_statement(tmp_path, subjects["model_digest"]).returncode != 0
    assert not (tmp_path / "model-provenance.statement.json").exists()
    with pytest.raises(RegistryError) as info:
        check_subjects(forged)
    assert info.value.code == "CI_PROVENANCE_MISMATCH"


def test_only_the_isolated_job_holds_the_oidc_token() -> None:
    jobs = _jobs()
    holders = [n for n, j in jobs.items() if (j.get("permissions") or {}).get("id-token")]
    assert sorted(holders) == ["image-sign", "model-provenance-sign"]
    sign = jobs["model-provenance-sign"]
    assert sign["permissions"] == {"id-token": "write"}
    uses = [str(s.get("uses", "")).split("@")[0] for s in sign["steps"]]
    assert uses == ["actions/download-artifact", "", "sigstore/cosign-installer", "",
                    "actions/upload-artifact"]
    assert sign["needs"] == "model-build"
    verify = jobs["model-provenance-verify"]
    assert "id-token" not in verify["permissions"]
    assert "registry.cli ci-verify" in "\n".join(str(s.get("run", "")) for s in verify["steps"])
