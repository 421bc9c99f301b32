"""The tags a registered version carries: where it came from, its signed attestations, its
data and config digests, its base model and a summary of its evaluation. Readers use them;
the verifier only checks them against what the signatures vouch for (registry/verify.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from common.redact import redact
from registry import mlflow_registry as reg
from registry.attest import Attestations, BuildInputs, ImportInputs, Signer
from registry.base_model import base_tags


def attestation_tags(build: BuildInputs | ImportInputs, signer: Signer, run_id: str,
                     names: Attestations, digests: Mapping[str, str]) -> dict[str, str]:
    """Where a version came from and its signed attestations: the tags every version carries,
    trained (`register_model`) or imported (`registry.imports`)."""
    def location(name: str) -> str:
        return reg.run_artifact_uri(run_id, f"{reg.ATTESTATIONS_ARTIFACT_PATH}/{name}")

    source = build.source
    return {
        reg.TAG_SOURCE_REPOSITORY: source.repository,
        reg.TAG_SOURCE_COMMIT: source.commit,
        reg.TAG_SOURCE_DIRTY: "unknown" if source.dirty is None else str(source.dirty).lower(),
        reg.TAG_EXECUTION_ID: build.execution_id,
        reg.TAG_BUILDER_ID: build.builder_id,
        reg.TAG_SIGNING_MODE: signer.mode,
        reg.TAG_SIGNER: signer.label,
        reg.TAG_SIGNATURE_URI: location(names.signature),
        reg.TAG_SIGNATURE_SHA256: digests[names.signature],
        reg.TAG_PROVENANCE_URI: location(names.provenance),
        reg.TAG_PROVENANCE_SHA256: digests[names.provenance],
        reg.TAG_SBOM_URI: location(names.sbom),
        reg.TAG_SBOM_SHA256: digests[names.sbom],
    }


def version_tags(
    build: BuildInputs,
    signer: Signer,
    run_id: str,
    names: Attestations,
    digests: Mapping[str, str],
) -> dict[str, str]:
    def location(name: str) -> str:
        return reg.run_artifact_uri(run_id, f"{reg.ATTESTATIONS_ARTIFACT_PATH}/{name}")

    tags = {
        reg.TAG_MODEL_DIGEST: build.model_digest,
        reg.TAG_CONFIG_DIGEST: build.config_digest,
        **attestation_tags(build, signer, run_id, names, digests),
    }
    if names.eval_attestation is not None:  # for readers: the verifier finds it by file name
        tags["eval_attestation_uri"] = location(names.eval_attestation)
    for split, digest in build.dataset_digests.items():
        tags[f"{reg.TAG_DATASET_DIGEST_PREFIX}{split}"] = digest
    if build.training_run_id is not None:
        tags[reg.TAG_TRAINING_RUN_ID] = build.training_run_id
    if build.base_model is not None:
        tags.update(base_tags(build.base_model))
    if build.eval_report is not None:
        summary = build.eval_report.get("summary", build.eval_report)
        tags[reg.TAG_EVAL_SUMMARY] = reg.truncate_tag(json.dumps(summary, sort_keys=True))
        if build.eval_report.get("gate_outcome") is not None:
            tags[reg.TAG_EVAL_GATE] = str(build.eval_report["gate_outcome"])
    return redact(tags)
