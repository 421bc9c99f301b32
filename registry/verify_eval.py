"""The evaluation evidence (registry/verify.py): every signed eval attestation of the version
verifies and is about these bytes; the one the policy judges is the newest evaluation, or with
`evaluated_against` (deploy) the newest measured against that champion; the policy's gate
outcome, gate modes and required checks are read from it, never from an MLflow tag or the
unsigned eval_report.json (registry/eval_attestation.py). Checks: eval_attestation,
eval_attestation_signature, eval_attestation_format, eval_attestation_subject,
eval_attestation_champion, policy_eval_gate, policy_gate_mode, policy_eval_checks.
"""

from __future__ import annotations

from pathlib import Path

from registry import eval_attestation as eval_att
from registry.dsse import verify_statement
from registry.errors import RegistryError
from registry.policy import Policy
from registry.verify_checks import CheckOutcome, VerifyRequest, require
from registry.verify_signature import TrustRoot


def check_eval_attestations(
    attest_dir: Path,
    mode: str,
    digest: str,
    trust: TrustRoot,
    request: VerifyRequest,
    checks: list[CheckOutcome],
) -> eval_att.EvalEvidence | None:
    """The eval evidence the policy judges, or None (no attestation, and the policy needs
    none). Every attestation is verified (one that fails is tampering, whichever is chosen);
    then the newest one, or with `evaluated_against` the newest measured against it."""
    policy = request.policy
    first = attest_dir / eval_att.file_name(mode)
    later = sorted((attest_dir / eval_att.EVALUATIONS_DIR).glob(
        f"eval-*.{eval_att.file_name(mode).removeprefix('eval.')}"))
    paths = [p for p in (first, *later) if p.is_file()]
    if not paths:
        if policy.requires_eval:
            raise RegistryError(
                "VERIFICATION_FAILED",
                f"the version has no signed eval attestation ({first.name}), and policy "
                f"{policy.source} has eval requirements: an unevaluated model (or one whose "
                "attestation was removed) cannot show its gate passed. Evaluate the model and "
                "register it with its eval report.",
                check=eval_att.CHECK_PRESENT,
                expected=first.name,
                found="missing",
            )
        checks.append(CheckOutcome(eval_att.CHECK_PRESENT, "skipped", "not evaluated"))
        return None
    evidence = []
    for path in paths:
        statement = verify_statement(
            path, public_key_path=trust[0], sigstore=trust[1], check=eval_att.CHECK_SIGNATURE
        )
        evidence.append(eval_att.read_evidence(
            statement, digest, path.relative_to(attest_dir).as_posix()))
    names = ", ".join(e.file for e in evidence)
    checks.append(CheckOutcome(eval_att.CHECK_SIGNATURE, "passed", names))
    checks.append(CheckOutcome(eval_att.CHECK_FORMAT, "passed", eval_att.TEST_RESULT_PREDICATE))
    checks.append(CheckOutcome(eval_att.CHECK_SUBJECT, "passed", f"sha256:{digest}"))
    return _chosen_evidence(evidence, request, checks)


def _chosen_evidence(evidence: list[eval_att.EvalEvidence], request: VerifyRequest,
                     checks: list[CheckOutcome]) -> eval_att.EvalEvidence:
    current = request.evaluated_against
    if current is None or not request.policy.requires_eval:
        chosen = eval_att.newest(evidence)
        assert chosen is not None  # there is at least one
        checks.append(CheckOutcome(eval_att.CHECK_CHAMPION, "skipped",
                                   f"no champion named: the newest evaluation, {chosen.file}"))
        return chosen
    chosen = eval_att.select_evidence(evidence, current, request.model_uri)
    checks.append(CheckOutcome(eval_att.CHECK_CHAMPION, "passed",
                               f"{chosen.file} was measured against {current.label}"))
    return chosen


def check_eval_policy(
    evidence: eval_att.EvalEvidence | None, policy: Policy
) -> list[CheckOutcome]:
    outcome = evidence.gate_outcome if evidence else None
    outcomes = []
    if policy.required_eval_gate is None:
        outcomes.append(CheckOutcome("policy_eval_gate", "skipped", f"not required ({outcome})"))
    else:
        require(
            "policy_eval_gate",
            outcome == policy.required_eval_gate,
            policy.required_eval_gate,
            outcome,
            "eval gate outcome (signed eval attestation)",
        )
        outcomes.append(CheckOutcome("policy_eval_gate", "passed", str(outcome)))
    mode = evidence.gate_mode if evidence else None
    if policy.required_gate_modes is None:
        outcomes.append(CheckOutcome("policy_gate_mode", "skipped", f"not required ({mode})"))
    elif mode not in policy.required_gate_modes:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"the eval gate ran in {mode!r} mode, which policy {policy.source} does not accept "
            "(`absolute`: no champion was compared). Evaluate against the champion, or add "
            "the mode to required_gate_modes if bounds alone are enough.",
            check="policy_gate_mode",
            expected=f"one of {list(policy.required_gate_modes)}",
            found=str(mode),
        )
    else:
        outcomes.append(CheckOutcome("policy_gate_mode", "passed", str(mode)))
    outcomes.append(_check_required_eval_checks(evidence, policy))
    return outcomes


def _check_required_eval_checks(
    evidence: eval_att.EvalEvidence | None, policy: Policy
) -> CheckOutcome:
    required = policy.required_eval_checks
    if required is None:
        return CheckOutcome("policy_eval_checks", "skipped", "not required")
    passed = evidence.passed_tests if evidence else ()
    missing = [name for name in required if name not in passed]
    if missing:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"the eval attestation does not show the gate checks {missing} passed (policy "
            f"{policy.source}, required_eval_checks): they failed or were not run. Configure "
            "the eval gate to run them (floors, margins, a gating judge) and re-evaluate.",
            check="policy_eval_checks",
            expected=f"passed: {list(required)}",
            found=f"passed: {list(passed)}",
        )
    return CheckOutcome("policy_eval_checks", "passed", ", ".join(required))


def imported_eval_skips() -> list[CheckOutcome]:
    why = "imported model, allowed by allowed_import_sources: never gated by Shipyard"
    names = (eval_att.CHECK_PRESENT, "policy_eval_gate", "policy_gate_mode",
             "policy_eval_checks")
    return [CheckOutcome(name, "skipped", why) for name in names]
