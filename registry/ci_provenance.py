"""Keyless provenance signed in CI, in an isolated job (in the style of slsa-github-generator).

The job that trains and registers the model runs dependency code, so it gets no OIDC token.
It verifies the registered version (`verify_model`, the full chain) and writes a small
*subjects* file: the model's name, version and root digest, and the sha256 of the
provenance and eval attestation that registration signed. The signing job receives only that
file; it has the OIDC token, checks out nothing and installs nothing. It builds an in-toto
Statement (SLSA v1 provenance, build type `CI_BUILD_TYPE`) from those digests and GitHub's
own context with `jq` and signs it keyless with `cosign attest-blob --statement`.

`check_ci_statement` is what a verifier runs over the signed statement (after checking the
Sigstore bundle against the workflow identity): the subject is the model digest it was handed,
and the statement names the exact provenance and eval attestation bytes registration signed,
so the keyless signature vouches for the detailed provenance, not only for a digest.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from common.digests import is_sha256, sha256_file
from registry import provenance as prov
from registry.errors import RegistryError

SUBJECTS_SCHEMA = "shipyard.ci-subjects/v1"
CI_BUILD_TYPE = f"{prov.PROJECT_URL}/blob/main/registry/BUILD_TYPE.md#ci-v1"
PROVENANCE_DEPENDENCY = "shipyard-provenance"
EVAL_ATTESTATION_DEPENDENCY = "shipyard-eval-attestation"
CHECK = "ci_provenance"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _file_entry(path: Path) -> dict[str, str]:
    return {"name": path.name, "sha256": sha256_file(path)}


def ci_subjects(
    *,
    model_name: str,
    model_version: str,
    model_digest: str,
    provenance_file: Path,
    eval_attestation_file: Path | None,
) -> dict[str, Any]:
    """The hand-off to the signing job; call it only on a version `verify_model` passed."""
    subjects = {
        "schema": SUBJECTS_SCHEMA,
        "model_name": model_name,
        "model_version": model_version,
        "model_digest": model_digest,
        "provenance": _file_entry(provenance_file),
        "eval_attestation": (
            _file_entry(eval_attestation_file) if eval_attestation_file is not None else None
        ),
    }
    check_subjects(subjects)
    return subjects


def check_subjects(subjects: Any) -> None:
    """The same rules the signing job's jq gate applies before it signs anything."""
    problems = []
    if not isinstance(subjects, dict) or subjects.get("schema") != SUBJECTS_SCHEMA:
        raise _mismatch("the subjects file is not a Shipyard CI subjects file",
                        expected=f"schema {SUBJECTS_SCHEMA}", found=str(subjects)[:200])
    if not _NAME.fullmatch(str(subjects.get("model_name", ""))):
        problems.append("model_name")
    if not str(subjects.get("model_version", "")).isdigit():
        problems.append("model_version")
    if not is_sha256(subjects.get("model_digest")):
        problems.append("model_digest")
    for key, required in (("provenance", True), ("eval_attestation", False)):
        entry = subjects.get(key)
        if entry is None and not required:
            continue
        if not (isinstance(entry, dict) and is_sha256(entry.get("sha256"))
                and _NAME.fullmatch(str(entry.get("name", "")))):
            problems.append(key)
    if problems:
        raise _mismatch(
            f"the subjects file has malformed fields: {', '.join(problems)} (names "
            "[A-Za-z0-9._-], digests 64 lowercase hex, version a number)",
            expected="well-formed subjects", found=json.dumps(subjects)[:300],
        )


def check_ci_statement(
    statement: dict[str, Any],
    subjects: dict[str, Any],
    *,
    repository: str | None = None,
    commit: str | None = None,
) -> None:
    """Fail-closed: the keyless statement is about exactly these bytes (and this source)."""
    check_subjects(subjects)
    if statement.get("_type") != prov.STATEMENT_TYPE:
        raise _mismatch("not an in-toto Statement v1", prov.STATEMENT_TYPE, statement.get("_type"))
    if statement.get("predicateType") != prov.PREDICATE_TYPE:
        raise _mismatch("not SLSA v1 provenance", prov.PREDICATE_TYPE,
                        statement.get("predicateType"))
    expected_subject = [{"name": subjects["model_name"],
                         "digest": {"sha256": subjects["model_digest"]}}]
    if statement.get("subject") != expected_subject:
        raise _mismatch("the statement's subject is not the model handed to the signing job",
                        expected_subject, statement.get("subject"))
    definition = (statement.get("predicate") or {}).get("buildDefinition") or {}
    if definition.get("buildType") != CI_BUILD_TYPE:
        raise _mismatch("unexpected build type", CI_BUILD_TYPE, definition.get("buildType"))
    internal = definition.get("internalParameters") or {}
    if str(internal.get("model_version")) != str(subjects["model_version"]):
        raise _mismatch("the statement names another model version",
                        subjects["model_version"], internal.get("model_version"))
    dependencies = {d.get("name"): d for d in definition.get("resolvedDependencies") or []
                    if isinstance(d, dict)}
    for name, key in ((PROVENANCE_DEPENDENCY, "provenance"),
                      (EVAL_ATTESTATION_DEPENDENCY, "eval_attestation")):
        entry = subjects.get(key)
        found = (dependencies.get(name) or {}).get("digest", {}).get("sha256")
        wanted = entry["sha256"] if entry else None
        if found != wanted:
            raise _mismatch(f"the statement does not bind the registered {key.replace('_', ' ')}",
                            wanted, found)
    if repository is not None:
        found_repo = (definition.get("externalParameters") or {}).get("repository")
        if found_repo != repository:
            raise _mismatch("the statement comes from another repository", repository, found_repo)
    if commit is not None:
        found_commit = (dependencies.get("source") or {}).get("digest", {}).get("gitCommit")
        if found_commit != commit:
            raise _mismatch("the statement was built from another commit", commit, found_commit)


def _mismatch(message: str, expected: Any, found: Any) -> RegistryError:
    def text(value: Any) -> str | None:
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value, sort_keys=True)

    return RegistryError("CI_PROVENANCE_MISMATCH", message, check=CHECK,
                         expected=text(expected), found=text(found))
