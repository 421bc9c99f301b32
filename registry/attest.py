"""Write a model's attestations: signature, SBOM, eval report, signed eval attestation
(registry/eval_attestation.py) and signed SLSA provenance.

All of them go into one directory outside the model directory, which the register stage
logs to MLflow as `attestations/` next to `model/`. A later evaluation of a registered
digest (`write_evaluation`) adds its report and its own signed eval attestation under
`attestations/evaluations/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.digests import model_root_digest, sha256_file
from registry import eval_attestation
from registry import provenance as prov
from registry.base_model import BaseModelRef, base_dependencies, upstream_dependencies
from registry.config import RegisterConfig
from registry.dsse import sign_statement
from registry.errors import RegistryError
from registry.sbom import MEDIA_TYPE as SBOM_MEDIA_TYPE
from registry.sbom import environment_sbom
from registry.signing import KeyPair, SigstoreIdentity, sign_model
from registry.source import SourceInfo

SIGNATURE_FILE = "model.sig"
SBOM_FILE = "sbom.cdx.json"
PUBLIC_KEY_FILE = "signing.pub"
KEY_PROVENANCE_FILE = "provenance.dsse.json"
SIGSTORE_PROVENANCE_FILE = "provenance.sigstore.json"
LOCKFILE = Path("requirements/lock-cpu.txt")


@dataclass(frozen=True)
class Signer:
    mode: str
    key_pair: KeyPair | None
    sigstore: SigstoreIdentity | None

    @property
    def label(self) -> str:
        """`sha256:<public key fingerprint>` in key mode, the OIDC identity in sigstore mode."""
        if self.key_pair is not None:
            return f"sha256:{self.key_pair.fingerprint}"
        assert self.sigstore is not None
        return self.sigstore.identity


@dataclass(frozen=True)
class BuildInputs:
    """Everything the provenance says about how the model was built."""

    config: RegisterConfig
    model_dir: Path
    model_digest: str
    dataset_digests: Mapping[str, str]
    dataset_uris: Mapping[str, str]
    config_digest: str
    resolved_config_json: str
    training_run_id: str | None
    eval_report: Mapping[str, Any] | None
    execution_id: str
    builder_id: str
    started_on: datetime
    source: SourceInfo
    project_root: Path | None
    workflow_inputs: Mapping[str, Any] | None
    base_model_dir: Path | None
    # Shipyard's claims for the eval attestation (eval.summary.attestation_claims); None:
    # the attestation carries only what the eval report itself says.
    eval_claims: Mapping[str, Any] | None = None
    # The base's identity (registry/base_model.py): its directory, GGUF and wheel become
    # resolved dependencies; None: only `base_model_dir` (by digest), or no base at all.
    base_model: BaseModelRef | None = None


@dataclass(frozen=True)
class ImportInputs:
    """Everything the provenance of an imported base model says (registry/imports.py)."""

    config: RegisterConfig
    model_dir: Path
    base: BaseModelRef
    execution_id: str
    builder_id: str
    started_on: datetime
    source: SourceInfo
    project_root: Path | None
    workflow_inputs: Mapping[str, Any] | None

    @property
    def model_digest(self) -> str:
        return self.base.model_digest


@dataclass(frozen=True)
class Attestations:
    signature: str
    provenance: str
    sbom: str
    # the signed eval attestation; None when the model was not evaluated
    eval_attestation: str | None = None

    def digests(self, directory: Path) -> dict[str, str]:
        names = (self.signature, self.provenance, self.sbom, self.eval_attestation)
        return {name: sha256_file(directory / name) for name in names if name is not None}


def write_attestations(
    out_dir: Path, build: BuildInputs, signer: Signer, registration_run_id: str
) -> Attestations:
    _sign_model_dir(out_dir, build.model_dir, build.model_digest, signer)
    byproducts = [_write_sbom(out_dir)]
    eval_file = None
    if build.eval_report is not None:
        eval_file = eval_attestation.file_name(signer.mode)
        byproducts[:0] = [
            _write_eval_report(out_dir, build.eval_report),
            _write_eval_attestation(out_dir / eval_file, build, signer),
        ]
    record = build_record(build, signer, registration_run_id, byproducts)
    provenance_file = _sign_provenance(out_dir, record, signer)
    return Attestations(
        signature=SIGNATURE_FILE, provenance=provenance_file, sbom=SBOM_FILE,
        eval_attestation=eval_file,
    )


@dataclass(frozen=True)
class Evaluation:
    """A later evaluation's files, relative to `attestations/`, and its report's digest."""

    report: str
    attestation: str
    report_sha256: str


def report_bytes(report: Mapping[str, Any]) -> bytes:
    """How an eval report is stored (the first one as eval_report.json): one digest per report."""
    return json.dumps(report, indent=2, sort_keys=True).encode()


def evaluation_names(report: Mapping[str, Any], signing_mode: str) -> Evaluation:
    """Where `write_evaluation` puts the report's files; the same report, the same names."""
    digest = hashlib.sha256(report_bytes(report)).hexdigest()
    attestation = eval_attestation.evaluation_file_name(signing_mode, digest)
    return Evaluation(report=attestation.split(".", 1)[0] + ".report.json",
                      attestation=attestation, report_sha256=digest)


def write_evaluation(out_dir: Path, build: BuildInputs, signer: Signer) -> Evaluation:
    """Write a later evaluation of the registered digest: its report (unsigned, for people)
    and its own signed eval attestation, under `out_dir/evaluations/`."""
    assert build.eval_report is not None
    names = evaluation_names(build.eval_report, signer.mode)
    (out_dir / names.report).parent.mkdir(parents=True, exist_ok=True)
    (out_dir / names.report).write_bytes(report_bytes(build.eval_report))
    _write_eval_attestation(out_dir / names.attestation, build, signer)
    return names


def write_import_attestations(
    out_dir: Path, build: ImportInputs, signer: Signer, registration_run_id: str
) -> Attestations:
    """Signature, SBOM and the signed provenance of an imported model (IMPORT_BUILD_TYPE):
    no eval report, nothing was trained."""
    _sign_model_dir(out_dir, build.model_dir, build.model_digest, signer)
    record = import_record(build, signer, registration_run_id, [_write_sbom(out_dir)])
    provenance_file = _sign_provenance(out_dir, record, signer)
    return Attestations(signature=SIGNATURE_FILE, provenance=provenance_file, sbom=SBOM_FILE)


def import_record(
    build: ImportInputs,
    signer: Signer,
    registration_run_id: str,
    byproducts: list[prov.ResourceDescriptor],
) -> prov.BuildRecord:
    """The provenance of an import: the subject is the model directory as provisioned; the
    external parameter is the source it was provisioned from; the resolved dependencies are
    the upstream artifacts (GGUF, wheel) and the code and lockfile that converted them."""
    base = build.base
    return prov.BuildRecord(
        subject_name=build.config.registered_model_name,
        model_digest=build.model_digest,
        builder_id=build.builder_id,
        invocation_id=build.execution_id,
        started_on=build.started_on,
        finished_on=datetime.now(UTC),
        external_parameters={
            "source": base.source,
            "workflow_inputs": dict(build.workflow_inputs or {}),
            "register_config": dataclasses.asdict(build.config),
        },
        internal_parameters={
            "base_model": {k: v for k, v in base.to_dict().items() if k != "model_digest"},
            "registration_run_id": registration_run_id,
            "signing_mode": signer.mode,
            "signer": signer.label,
            "model_hashing": "model-signing files serialization, sha256",
            "python": platform.python_version(),
        },
        resolved_dependencies=[
            *upstream_dependencies(base),
            *_environment_dependencies(build.config, build.source, build.project_root),
        ],
        byproducts=byproducts,
        builder_version={d: _version_of(d) for d in ("shipyard", "mlflow", "model-signing")},
        build_type=prov.IMPORT_BUILD_TYPE,
    )


def _sign_model_dir(out_dir: Path, model_dir: Path, model_digest: str, signer: Signer) -> None:
    signed = sign_model(
        model_dir,
        out_dir / SIGNATURE_FILE,
        key_pair=signer.key_pair,
        sigstore=signer.sigstore,
    )
    if signed != model_digest:  # the directory changed after the digest check
        raise RegistryError(
            "SIGNING_FAILED",
            f"{model_dir} changed while it was being signed.",
            expected=model_digest,
            found=signed,
        )
    if signer.key_pair is not None:
        # A convenience copy for people browsing MLflow; verifiers must bring their own.
        (out_dir / PUBLIC_KEY_FILE).write_bytes(signer.key_pair.public_key_path.read_bytes())


def _sign_provenance(out_dir: Path, record: prov.BuildRecord, signer: Signer) -> str:
    provenance_file = KEY_PROVENANCE_FILE if signer.key_pair else SIGSTORE_PROVENANCE_FILE
    sign_statement(
        prov.build_statement(record),
        out_dir / provenance_file,
        key_pair=signer.key_pair,
        sigstore=signer.sigstore,
    )
    return provenance_file


def build_record(
    build: BuildInputs,
    signer: Signer,
    registration_run_id: str,
    byproducts: list[prov.ResourceDescriptor],
) -> prov.BuildRecord:
    return prov.BuildRecord(
        subject_name=build.config.registered_model_name,
        model_digest=build.model_digest,
        builder_id=build.builder_id,
        invocation_id=build.execution_id,
        started_on=build.started_on,
        finished_on=datetime.now(UTC),
        external_parameters={
            "workflow_inputs": dict(build.workflow_inputs or {}),
            "train_config": json.loads(build.resolved_config_json),
            "register_config": dataclasses.asdict(build.config),
        },
        internal_parameters={
            "config_digest": build.config_digest,
            "training_run_id": build.training_run_id,
            "registration_run_id": registration_run_id,
            "signing_mode": signer.mode,
            "signer": signer.label,
            "model_hashing": "model-signing files serialization, sha256",
            "python": platform.python_version(),
        },
        resolved_dependencies=_dependencies(build),
        byproducts=byproducts,
        builder_version={d: _version_of(d) for d in ("shipyard", "mlflow", "model-signing")},
    )


def _dependencies(build: BuildInputs) -> list[prov.ResourceDescriptor]:
    source = build.source
    deps = [prov.source_dependency(source.repository, source.commit, source.dirty)]
    deps += [
        prov.ResourceDescriptor(
            name=f"dataset/{split}", uri=build.dataset_uris[split], digest={"sha256": digest}
        )
        for split, digest in sorted(build.dataset_digests.items())
    ]
    if build.base_model is not None:
        deps += base_dependencies(build.base_model, build.base_model_dir)
    elif build.base_model_dir is not None:
        base = Path(build.base_model_dir)
        deps.append(
            prov.ResourceDescriptor(
                name="base_model",
                uri=base.resolve().as_uri(),
                digest={"sha256": model_root_digest(base)},
            )
        )
    return deps + _environment_dependencies(build.config, None, build.project_root)


def _environment_dependencies(
    config: RegisterConfig, source: SourceInfo | None, project_root: Path | None
) -> list[prov.ResourceDescriptor]:
    """The source commit (when `source` is given), the lockfile and the container image."""
    deps = []
    if source is not None:
        deps.append(prov.source_dependency(source.repository, source.commit, source.dirty))
    if project_root is not None and (project_root / LOCKFILE).is_file():
        deps.append(
            prov.ResourceDescriptor(
                name="lockfile",
                uri=LOCKFILE.as_posix(),
                digest={"sha256": sha256_file(project_root / LOCKFILE)},
            )
        )
    image = config.container_image
    if image is not None:  # RegisterConfig guarantees REF@sha256:HEX
        deps.append(
            prov.ResourceDescriptor(
                name="container_image",
                uri=image,
                digest={"sha256": image.rsplit("@sha256:", 1)[1]},
            )
        )
    return deps


def _write_sbom(out_dir: Path) -> prov.ResourceDescriptor:
    path = out_dir / SBOM_FILE
    path.write_text(json.dumps(environment_sbom(), indent=2))
    return prov.ResourceDescriptor(
        name=SBOM_FILE, digest={"sha256": sha256_file(path)}, media_type=SBOM_MEDIA_TYPE
    )


def _write_eval_report(out_dir: Path, report: Mapping[str, Any]) -> prov.ResourceDescriptor:
    path = out_dir / prov.EVAL_REPORT_BYPRODUCT
    path.write_bytes(report_bytes(report))
    gate = report.get("gate_outcome")
    return prov.ResourceDescriptor(
        name=prov.EVAL_REPORT_BYPRODUCT,
        digest={"sha256": sha256_file(path)},
        media_type="application/json",
        # Signed here, the gate outcome is what a deploy policy can rely on (tags can change).
        annotations={"gate_outcome": str(gate)} if gate is not None else {},
    )


def _write_eval_attestation(
    path: Path, build: BuildInputs, signer: Signer
) -> prov.ResourceDescriptor:
    """Sign the eval result about the model with the provenance's signer; the provenance
    lists the envelope as a byproduct, so the two are bound to each other as well."""
    assert build.eval_report is not None
    statement = eval_attestation.build_statement(
        build.config.registered_model_name, build.model_digest, build.eval_report,
        build.eval_claims,
    )
    sign_statement(statement, path, key_pair=signer.key_pair, sigstore=signer.sigstore)
    return prov.ResourceDescriptor(
        name=path.name,
        digest={"sha256": sha256_file(path)},
        media_type="application/vnd.in-toto+json",
        annotations={"predicateType": eval_attestation.TEST_RESULT_PREDICATE},
    )


def _version_of(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
