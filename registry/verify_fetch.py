"""What verification reads from MLflow (registry/verify.py): the version a models:/ URI names,
the attestation file names its tags point at, and its files, bounded by the policy's
max_model_bytes before anything is downloaded. Checks: resolve, mlflow_tag (attestation
URIs), download_size, download."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from registry import mlflow_registry as reg
from registry.errors import RegistryError
from registry.model_uri import ModelUri
from registry.policy import Policy
from registry.verify_checks import CheckOutcome


def resolve(client: MlflowClient, model_uri: str) -> ModelVersion:
    uri = ModelUri.parse(model_uri)
    try:
        if uri.alias is not None:
            return client.get_model_version_by_alias(uri.name, uri.alias)
        return client.get_model_version(uri.name, uri.version_or_alias)
    except MlflowException as exc:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"{model_uri} does not name a registered model version: {exc.message}",
            check="resolve",
        ) from exc


def check_download_size(
    client: MlflowClient, version: ModelVersion, policy: Policy
) -> CheckOutcome:
    """Sum the artifact listing's sizes; an unknown size is refused (nothing is bounded)."""
    total = 0
    for uri in (str(version.source), attestations_uri(version)):
        try:
            run_id, path = reg.parse_run_artifact_uri(uri)
            sizes = _listed_sizes(client, run_id, path)
        except (MlflowException, OSError, RegistryError) as exc:
            raise RegistryError(
                "VERIFICATION_FAILED",
                f"cannot list the version's files: {exc}",
                check="download",
                expected=f"{uri} listed by MLflow",
                found="listing error",
            ) from exc
        unknown = [name for name, size in sizes if size is None]
        if unknown:
            raise RegistryError(
                "VERIFICATION_FAILED",
                f"the artifact store does not report the size of {unknown[:3]}: the download "
                "cannot be bounded. Use an artifact store that lists sizes.",
                check="download_size",
                expected="a size for every file",
                found="unknown size",
            )
        total += sum(size or 0 for _, size in sizes)
    if total > policy.max_model_bytes:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"{version.name} version {version.version} is {total} bytes, over the "
            f"max_model_bytes of policy {policy.source}: nothing was downloaded. Raise "
            "max_model_bytes in the policy if a model this large is expected.",
            check="download_size",
            expected=f"<= {policy.max_model_bytes} bytes",
            found=f"{total} bytes",
        )
    return CheckOutcome("download_size", "passed", f"{total} bytes")


def _listed_sizes(client: MlflowClient, run_id: str, path: str) -> list[tuple[str, int | None]]:
    sizes: list[tuple[str, int | None]] = []
    pending = [path]
    while pending:
        for info in client.list_artifacts(run_id, pending.pop()):
            if info.is_dir:
                pending.append(info.path)
            else:
                sizes.append((info.path, info.file_size))
    return sizes


def attestations_uri(version: ModelVersion) -> str:
    return reg.run_artifact_uri(str(version.run_id), reg.ATTESTATIONS_ARTIFACT_PATH)


def attestation_names(tags: dict[str, str], run_id: str) -> tuple[str, str]:
    """File names of signature and provenance; their URIs must point into the version's run."""
    names = []
    prefix = reg.run_artifact_uri(run_id, reg.ATTESTATIONS_ARTIFACT_PATH) + "/"
    for key in (reg.TAG_SIGNATURE_URI, reg.TAG_PROVENANCE_URI):
        uri = tags.get(key)
        name = uri.removeprefix(prefix) if uri else ""
        if not uri or not uri.startswith(prefix) or not name or "/" in name or ".." in name:
            raise RegistryError(
                "VERIFICATION_FAILED",
                f"MLflow tag {key} must point at this version's own attestations",
                check="mlflow_tag",
                expected=f"{prefix}<file>",
                found=str(uri),
            )
        names.append(name)
    return names[0], names[1]


def download(client: MlflowClient, uri: str, work_dir: Path, version: ModelVersion) -> Path:
    try:
        return reg.download(client, uri, work_dir)
    except (MlflowException, OSError, RegistryError) as exc:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"cannot download the version's files: {exc}",
            check="download",
            expected=f"{version.source} and its attestations",
            found="download error",
        ) from exc
