"""The eval gate's result as a signed in-toto attestation about the model's root digest.

One in-toto Statement v1 per evaluation, signed like the provenance (DSSE with the same key in
key mode, a Sigstore bundle keyless). The first evaluation is logged next to the provenance in
`attestations/` (and bound to it as a byproduct); each later evaluation of the same digest
(a re-registration) adds its own statement under `attestations/evaluations/`, and the older
ones stay: a PASS measured against one champion says nothing about the next champion.

  subject        the model: registered model name + model-signing root digest
  predicateType  https://in-toto.io/attestation/test-result/v0.1 (vetted upstream)
  predicate      result        PASSED, or FAILED for a FAIL or NO_EVIDENCE gate (the gate has
                               no warning outcome, so WARNED is never written)
                 configuration the suite (tasks, lm-eval task versions, source digest) and
                               each task's data by sha256
                 passedTests / failedTests   the gate's checks by name (floor:<task>,
                               ceiling:<task>, non_inferiority:<task>, judge_win_rate)
                 warnedTests   always empty
                 CLAIMS_KEY    Shipyard's claims (an in-toto extension field, keyed by a URI
                               as the attestation framework's parsing rules ask): gate outcome
                               and mode, per check metric / comparator / threshold / value /
                               interval / sample size, champion digest, judge kappa and whether
                               the judge gated; `champion_digest` (hex, null: no champion)
                               and `attested_at` (UTC, when it was signed) are always taken
                               from the report and the clock, never from the caller's claims.
                               Documented in registry/BUILD_TYPE.md.

The verifier's eval policy (`required_eval_gate`, `required_gate_modes`,
`required_eval_checks`) reads this statement only, after its signature and subject check:
never the MLflow tags or the unsigned eval_report.json. Deploy names the current champion
(`CurrentChampion`): `select_evidence` then keeps the newest statement measured against it, and
DEPLOY_EVIDENCE_STALE refuses a version with none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.redact import redact
from registry import provenance as prov
from registry.errors import RegistryError

TEST_RESULT_PREDICATE = "https://in-toto.io/attestation/test-result/v0.1"
CLAIMS_KEY = f"{prov.PROJECT_URL}/blob/main/registry/BUILD_TYPE.md#eval-claims-v1"
KEY_FILE = "eval.dsse.json"
SIGSTORE_FILE = "eval.sigstore.json"
# Later evaluations of a registered digest, one statement each (`eval-<report sha256>.<suffix>`)
EVALUATIONS_DIR = "evaluations"
# gate outcome -> test-result `result`; NO_EVIDENCE (nothing was checked) is no pass.
RESULTS = {"PASS": "PASSED", "FAIL": "FAILED", "NO_EVIDENCE": "FAILED"}

CHECK_PRESENT = "eval_attestation"
CHECK_SIGNATURE = "eval_attestation_signature"
CHECK_FORMAT = "eval_attestation_format"
CHECK_SUBJECT = "eval_attestation_subject"
CHECK_CHAMPION = "eval_attestation_champion"


@dataclass(frozen=True)
class EvalEvidence:
    """What a verified eval attestation says; the only input of the eval policy checks."""

    result: str
    gate_outcome: str
    gate_mode: str | None
    passed_tests: tuple[str, ...]
    failed_tests: tuple[str, ...]
    # The champion the model was measured against (hex; None: no champion, absolute bounds).
    champion_digest: str | None = None
    # False for a statement signed before the champion was always attested: it matches no
    # champion, not even "none" (fail closed).
    champion_attested: bool = False
    # When the statement was signed (ISO 8601 UTC); "" for one signed before it was recorded.
    attested_at: str = ""
    # Its file, relative to the version's `attestations/` (for messages).
    file: str = ""


@dataclass(frozen=True)
class CurrentChampion:
    """The champion a deploy would replace: the eval evidence must be measured against it."""

    # hex root digest; None: there is no champion (a first deployment)
    digest: str | None
    # for messages: models:/NAME/VERSION, or "no champion"
    label: str


def file_name(signing_mode: str) -> str:
    return KEY_FILE if signing_mode == "key" else SIGSTORE_FILE


def evaluation_file_name(signing_mode: str, report_sha256: str) -> str:
    """A later evaluation's statement, named by its eval report's digest: a retried
    registration with the same report finds it there and adds nothing."""
    suffix = file_name(signing_mode).removeprefix("eval.")
    return f"{EVALUATIONS_DIR}/eval-{report_sha256}.{suffix}"


def report_champion_digest(report: Mapping[str, Any]) -> str | None:
    """The digest of the champion the eval report compared with (`champion.digest`), hex."""
    champion = report.get("champion")
    digest = champion.get("digest") if isinstance(champion, Mapping) else None
    return str(digest).removeprefix("sha256:") if digest else None


def report_model_digest(report: Mapping[str, Any]) -> str | None:
    """The digest of the model the eval report is about (`model.digest`), when it says."""
    model = report.get("model")
    digest = model.get("digest") if isinstance(model, Mapping) else None
    return str(digest).removeprefix("sha256:") if digest else None


def check_report_is_about(report: Mapping[str, Any] | None, model_digest: str) -> None:
    """EVAL_REPORT_MISMATCH when the eval report names another model (fail closed)."""
    found = report_model_digest(report) if report is not None else None
    if found is not None and found != model_digest:
        raise RegistryError(
            "EVAL_REPORT_MISMATCH",
            f"the eval report is about model sha256:{found}, not the model being registered: "
            "refusing to attest it. Evaluate this model and register it with its own report.",
            expected=f"sha256:{model_digest}",
            found=f"sha256:{found}",
        )


def build_statement(
    model_name: str,
    model_digest: str,
    report: Mapping[str, Any],
    claims: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The statement for the eval `report` (the evaluate stage's JSON) about the model.
    `claims` are the per-check numbers (eval.summary.attestation_claims); the gate outcome and
    mode are taken from the report itself so the two can never disagree."""
    check_report_is_about(report, model_digest)
    outcome = str(report.get("gate_outcome"))
    gate = _mapping(report.get("gate"))
    checks = [c for c in gate.get("checks") or [] if isinstance(c, Mapping) and c.get("name")]
    summary = _mapping(report.get("summary"))
    mode = gate.get("mode") or summary.get("mode")
    shipyard_claims = {
        **dict(claims or {}), "gate_outcome": outcome, "gate_mode": mode,
        # what the gate was measured against, and when: deploy needs both (select_evidence)
        "champion_digest": report_champion_digest(report),
        "attested_at": datetime.now(UTC).isoformat(),
    }
    # redacted like the provenance: a claim or suite annotation may name a judge URL
    return redact({
        "_type": prov.STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": model_digest}}],
        "predicateType": TEST_RESULT_PREDICATE,
        "predicate": {
            "result": RESULTS.get(outcome, "FAILED"),
            "configuration": _configuration(report),
            "passedTests": [str(c["name"]) for c in checks if c.get("passed") is True],
            "warnedTests": [],
            "failedTests": [str(c["name"]) for c in checks if c.get("passed") is not True],
            CLAIMS_KEY: shipyard_claims,
        },
    })


def _configuration(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    suite = _mapping(report.get("suite"))
    versions = suite.get("versions") or {}
    config: list[dict[str, Any]] = [{
        "name": "suite",
        "annotations": {
            "tasks": list(suite.get("tasks") or []),
            "versions": dict(versions),
            "lm_eval_version": suite.get("lm_eval_version"),
            "limit_per_task": suite.get("limit_per_task"),
        },
    }]
    if suite.get("source_sha256"):
        config[0]["digest"] = {"sha256": str(suite["source_sha256"])}
    for task, digest in sorted((suite.get("data_sha256") or {}).items()):
        config.append({"name": f"task/{task}/data", "digest": {"sha256": str(digest)},
                       "annotations": {"version": versions.get(task)}})
    return config


def read_evidence(statement: Mapping[str, Any], model_digest: str, file: str = "") -> EvalEvidence:
    """The evidence in a signature-verified statement, after its format and subject checks."""
    predicate = statement.get("predicate")
    if (
        statement.get("_type") != prov.STATEMENT_TYPE
        or statement.get("predicateType") != TEST_RESULT_PREDICATE
        or not isinstance(predicate, Mapping)
    ):
        raise _format_error(
            f"not an in-toto test-result statement ({statement.get('predicateType')!r})"
        )
    claims = predicate.get(CLAIMS_KEY)
    if not isinstance(claims, Mapping) or "gate_outcome" not in claims:
        raise _format_error(f"the predicate has no Shipyard claims ({CLAIMS_KEY})")
    outcome = str(claims["gate_outcome"])
    if predicate.get("result") != RESULTS.get(outcome, "FAILED"):
        raise _format_error(
            f"result {predicate.get('result')!r} contradicts gate outcome {outcome!r}"
        )
    subjects = statement.get("subject")
    digests = [
        (s.get("digest") or {}).get("sha256") for s in subjects or [] if isinstance(s, Mapping)
    ]
    if digests != [model_digest]:
        raise RegistryError(
            "VERIFICATION_FAILED",
            "the eval attestation is about another model: the eval result of one model was "
            "put next to another. Re-register the model with its own evaluation.",
            check=CHECK_SUBJECT,
            expected=f"sha256:{model_digest}",
            found=", ".join(f"sha256:{d}" for d in digests) or "no subject",
        )
    mode, champion = claims.get("gate_mode"), claims.get("champion_digest")
    return EvalEvidence(
        result=str(predicate["result"]),
        gate_outcome=outcome,
        gate_mode=str(mode) if mode is not None else None,
        passed_tests=tuple(str(t) for t in predicate.get("passedTests") or []),
        failed_tests=tuple(str(t) for t in predicate.get("failedTests") or []),
        champion_digest=str(champion).removeprefix("sha256:") if champion else None,
        champion_attested="champion_digest" in claims,
        attested_at=str(claims.get("attested_at") or ""),
        file=file,
    )


def newest(evidence: Sequence[EvalEvidence]) -> EvalEvidence | None:
    """The latest evaluation by its signed time (ties: the later in `evidence`)."""
    ranked = sorted(enumerate(evidence), key=lambda item: (item[1].attested_at, item[0]))
    return ranked[-1][1] if ranked else None


def select_evidence(
    evidence: Sequence[EvalEvidence], current: CurrentChampion, model_label: str
) -> EvalEvidence:
    """The newest evaluation measured against `current` (the deploy policy then judges its
    outcome); DEPLOY_EVIDENCE_STALE when no evaluation was: a PASS against an older champion
    proves nothing about this one, and a FAIL against an older one does not block."""
    matching = [e for e in evidence
                if e.champion_attested and e.champion_digest == current.digest]
    chosen = newest(matching)
    if chosen is not None:
        return chosen
    wanted = f"sha256:{current.digest}" if current.digest else "no champion"
    attested = sorted({_champion_label(e) for e in evidence}) or ["no evaluation"]
    raise RegistryError(
        "DEPLOY_EVIDENCE_STALE",
        f"{model_label} has no eval attestation measured against the current champion "
        f"{current.label} ({wanted}); its evaluations were against {attested}. Re-run "
        "evaluate against the current champion and register the model again: the new "
        "evaluation is added to this version.",
        check=CHECK_CHAMPION,
        expected=wanted,
        found=", ".join(attested),
    )


def _champion_label(evidence: EvalEvidence) -> str:
    if not evidence.champion_attested:
        return "an unrecorded champion"
    return f"sha256:{evidence.champion_digest}" if evidence.champion_digest else "no champion"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _format_error(message: str) -> RegistryError:
    return RegistryError(
        "VERIFICATION_FAILED",
        f"the eval attestation is malformed: {message}. Re-register the model.",
        check=CHECK_FORMAT,
        expected=TEST_RESULT_PREDICATE,
        found=message,
    )
