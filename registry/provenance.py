"""SLSA v1.0 provenance of a model: an in-toto Statement v1 about its root digest.

Field by field (https://slsa.dev/spec/v1.0/provenance):
  subject                           the model directory, by its model-signing root digest;
                                    its name is the MLflow registered model name
  buildDefinition.buildType         BUILD_TYPE (trained by Shipyard) or IMPORT_BUILD_TYPE (a
                                    base model registered as it is), registry/BUILD_TYPE.md
  buildDefinition.externalParameters  what the user chose: workflow inputs, stage configs
  buildDefinition.internalParameters  what the pipeline resolved: config digest, training run,
                                    signing mode, tool versions
  buildDefinition.resolvedDependencies  source commit, dataset splits, base model (its
                                    directory, GGUF and wheel: registry/base_model.py),
                                    lockfile, container image (remote runs)
  runDetails.builder.id             the Flyte cluster/project or the GitHub Actions workflow
  runDetails.metadata               invocationId (Flyte execution id), startedOn, finishedOn
  runDetails.byproducts             eval report and CycloneDX SBOM, by sha256
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from common.redact import redact
from registry.errors import RegistryError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# The project's home. One constant, so a fork changes one line.
PROJECT_URL = "https://github.com/shipyard-mlops/shipyard"
BUILD_TYPE = f"{PROJECT_URL}/blob/main/registry/BUILD_TYPE.md#v1"
# A base model registered as it is (registry/imports.py): not built by Shipyard's training.
IMPORT_BUILD_TYPE = f"{PROJECT_URL}/blob/main/registry/BUILD_TYPE.md#import-v1"
BUILD_TYPES = (BUILD_TYPE, IMPORT_BUILD_TYPE)
LOCAL_BUILDER_ID = "urn:shipyard:builder:flyte-local"

CHECK_PROVENANCE_FORMAT = "provenance_format"
SOURCE_DEPENDENCY = "source"
EVAL_REPORT_BYPRODUCT = "eval_report.json"


@dataclass(frozen=True)
class ResourceDescriptor:
    """An in-toto ResourceDescriptor: one dependency or byproduct."""

    name: str
    uri: str | None = None
    digest: dict[str, str] = field(default_factory=dict)
    media_type: str | None = None
    annotations: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.uri is not None:
            out["uri"] = self.uri
        if self.digest:
            out["digest"] = dict(self.digest)
        if self.media_type is not None:
            out["mediaType"] = self.media_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class BuildRecord:
    subject_name: str
    model_digest: str
    builder_id: str
    invocation_id: str
    started_on: datetime
    finished_on: datetime
    external_parameters: dict[str, Any]
    internal_parameters: dict[str, Any]
    resolved_dependencies: list[ResourceDescriptor]
    byproducts: list[ResourceDescriptor]
    builder_version: dict[str, str] = field(default_factory=dict)
    build_type: str = BUILD_TYPE


def default_builder_id(execution_id: str) -> str:
    """Builder of a Flyte execution `project:domain:name` (the name is the invocation)."""
    project, _, rest = execution_id.partition(":")
    domain = rest.partition(":")[0]
    if project in ("local", "none", "") or not domain:
        return LOCAL_BUILDER_ID
    return f"urn:shipyard:builder:flyte:{project}:{domain}"


def source_dependency(repository: str, commit: str, dirty: bool | None) -> ResourceDescriptor:
    known = commit != "unknown"
    return ResourceDescriptor(
        name=SOURCE_DEPENDENCY,
        uri=f"git+{repository}@{commit}" if known else f"git+{repository}",
        digest={"gitCommit": commit} if known else {},
        annotations={"dirty": "unknown" if dirty is None else dirty},
    )


def build_statement(record: BuildRecord) -> dict[str, Any]:
    """The statement, redacted (`common.redact`): parameters and dependency URIs (the train
    config's data and checkpoint URIs, dataset URIs, the source remote) lose any credential."""
    builder: dict[str, Any] = {"id": record.builder_id}
    if record.builder_version:
        builder["version"] = dict(record.builder_version)
    return redact({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": record.subject_name, "digest": {"sha256": record.model_digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": record.build_type,
                "externalParameters": record.external_parameters,
                "internalParameters": record.internal_parameters,
                "resolvedDependencies": [d.to_json() for d in record.resolved_dependencies],
            },
            "runDetails": {
                "builder": builder,
                "metadata": {
                    "invocationId": record.invocation_id,
                    "startedOn": _timestamp(record.started_on),
                    "finishedOn": _timestamp(record.finished_on),
                },
                "byproducts": [b.to_json() for b in record.byproducts],
            },
        },
    })


# Readers for the verifier. They index a statement that passed `check_format`.


def check_format(statement: dict[str, Any]) -> None:
    """Fail unless `statement` is a SLSA v1 provenance about exactly one sha256 subject."""
    _expect(statement.get("_type"), STATEMENT_TYPE, "_type")
    _expect(statement.get("predicateType"), PREDICATE_TYPE, "predicateType")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise _format_error("subject must list exactly one artifact", "1 subject", str(subjects))
    if "sha256" not in (subjects[0].get("digest") or {}):
        raise _format_error("subject has no sha256 digest", "digest.sha256", str(subjects[0]))
    predicate = statement.get("predicate") or {}
    build_type = predicate.get("buildDefinition", {}).get("buildType")
    if build_type not in BUILD_TYPES:
        raise _format_error("provenance buildType is not one Shipyard writes",
                            " or ".join(BUILD_TYPES), build_type)
    if not predicate.get("runDetails", {}).get("builder", {}).get("id"):
        raise _format_error("runDetails.builder.id is missing", "a builder id", "none")


def subject_digest(statement: dict[str, Any]) -> str:
    return str(statement["subject"][0]["digest"]["sha256"])


def subject_name(statement: dict[str, Any]) -> str:
    """The registered model name the model was signed for (see BUILD_TYPE.md)."""
    return str(statement["subject"][0].get("name", ""))


def is_imported(statement: dict[str, Any]) -> bool:
    """Whether the model was imported as it is (IMPORT_BUILD_TYPE), not trained by Shipyard."""
    return bool(statement["predicate"]["buildDefinition"]["buildType"] == IMPORT_BUILD_TYPE)


def import_source(statement: dict[str, Any]) -> str | None:
    """The `source` an imported model was provisioned from (its external parameter)."""
    source = statement["predicate"]["buildDefinition"].get("externalParameters", {}).get("source")
    return None if source is None else str(source)


def resolved_dependencies(statement: dict[str, Any]) -> list[dict[str, Any]]:
    return list(statement["predicate"]["buildDefinition"].get("resolvedDependencies", []))


def builder_id(statement: dict[str, Any]) -> str:
    return str(statement["predicate"]["runDetails"]["builder"]["id"])


def source_repository(statement: dict[str, Any]) -> str | None:
    """Repository URL of the `source` dependency, without `git+` and `@commit`."""
    for dep in statement["predicate"]["buildDefinition"].get("resolvedDependencies", []):
        if dep.get("name") == SOURCE_DEPENDENCY and dep.get("uri"):
            uri = str(dep["uri"]).removeprefix("git+")
            return uri.rsplit("@", 1)[0] if "gitCommit" in dep.get("digest", {}) else uri
    return None


def byproducts(statement: dict[str, Any]) -> list[dict[str, Any]]:
    return list(statement["predicate"]["runDetails"].get("byproducts", []))


def eval_gate_outcome(statement: dict[str, Any]) -> str | None:
    for item in byproducts(statement):
        if item.get("name") == EVAL_REPORT_BYPRODUCT:
            outcome = (item.get("annotations") or {}).get("gate_outcome")
            return None if outcome is None else str(outcome)
    return None


def _timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise RegistryError("PROVENANCE_INVALID", f"timestamp {moment} has no time zone.")
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _expect(found: Any, expected: str, name: str) -> None:
    if found != expected:
        raise _format_error(f"provenance {name} is not the one Shipyard writes", expected, found)


def _format_error(message: str, expected: Any, found: Any) -> RegistryError:
    return RegistryError(
        "VERIFICATION_FAILED",
        message,
        check=CHECK_PROVENANCE_FORMAT,
        expected=str(expected),
        found=str(found),
    )
