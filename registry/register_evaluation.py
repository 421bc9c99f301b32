"""A later evaluation of a version already registered (same digest): its own signed eval
attestation next to the earlier ones, added once per report (registry/stage.py)."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from common.digests import sha256_file
from common.redact import redact
from registry import eval_attestation
from registry import mlflow_registry as reg
from registry import provenance as prov
from registry.attest import BuildInputs, Signer, evaluation_names, write_evaluation

# the register stage's log, under the name it had before the split
logger = logging.getLogger("registry.stage")


def add_evaluation(client: MlflowClient, version: ModelVersion, build: BuildInputs,
                    signer: Signer) -> None:
    """Every evaluation leaves its own signed attestation on the version: deploy needs the
    one measured against the current champion, so a new eval report is never dropped. The
    same report twice (a retried registration) is added once."""
    assert build.eval_report is not None
    run_id = str(version.run_id)
    names = evaluation_names(build.eval_report, signer.mode)
    if names.report_sha256 in _recorded_report_digests(client, run_id):
        return
    with tempfile.TemporaryDirectory(prefix="shipyard-evaluation-") as tmp:
        write_evaluation(Path(tmp), build, signer)
        client.log_artifacts(run_id, str(Path(tmp) / eval_attestation.EVALUATIONS_DIR),
                             f"{reg.ATTESTATIONS_ARTIFACT_PATH}/{eval_attestation.EVALUATIONS_DIR}")
    # for readers (the verifier reads the signed statements only): the latest evaluation
    client.set_model_version_tag(version.name, version.version, reg.TAG_EVAL_GATE,
                                 str(build.eval_report.get("gate_outcome")))
    summary = build.eval_report.get("summary", build.eval_report)
    client.set_model_version_tag(version.name, version.version, reg.TAG_EVAL_SUMMARY,
                                 reg.truncate_tag(json.dumps(redact(summary), sort_keys=True)))
    logger.info("%s version %s: evaluation %s added (%s)", version.name, version.version,
                names.attestation, build.eval_report.get("gate_outcome"))


def _recorded_report_digests(client: MlflowClient, run_id: str) -> set[str]:
    """The sha256 of every eval report the version already holds (first and later ones)."""
    found = set()
    folder = f"{reg.ATTESTATIONS_ARTIFACT_PATH}/{eval_attestation.EVALUATIONS_DIR}"
    for info in client.list_artifacts(run_id, folder):
        if info.path.endswith(".report.json"):
            found.add(Path(info.path).name.removeprefix("eval-").split(".", 1)[0])
    with tempfile.TemporaryDirectory(prefix="shipyard-evaluation-") as tmp:
        try:
            first = Path(client.download_artifacts(
                run_id, f"{reg.ATTESTATIONS_ARTIFACT_PATH}/{prov.EVAL_REPORT_BYPRODUCT}", tmp))
            found.add(sha256_file(first))
        except (MlflowException, OSError):
            pass  # registered without an eval report
    return found
