"""The eval result is a signed in-toto test-result attestation about the model's digest, and
the verifier's eval policy reads it, never the MLflow tags or the unsigned report.

Tampering is done as an attacker with write access to the artifact store or the registry
would: editing the stored files and tags.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from common.digests import model_root_digest
from eval.summary import attestation_claims
from registry import eval_attestation as eval_att
from registry.errors import RegistryError
from registry.mlflow_registry import client_for
from registry.policy import Policy, policy_from_dict
from registry.signing import public_key_fingerprint
from registry.stage import RegistrationRequest, RegistrationResult, register_model
from registry.verify import VerificationResult, verify_model
from tests.registry.conftest import Store, run_artifacts_dir, stage_kwargs

pytestmark = pytest.mark.integration

LOCAL_BUILDER = ("urn:shipyard:builder:flyte-local",)
EVAL_ONLY = Policy(allowed_builder_ids=LOCAL_BUILDER)


def _report(digest: str, *, outcome: str = "PASS", mode: str = "champion",
            failed: tuple[str, ...] = ()) -> dict[str, Any]:
    """An eval report shaped like eval/report.py's, about the model with `digest`."""
    names = ["floor:shipyard_mc", "non_inferiority:shipyard_mc", "judge_win_rate"]
    return {
        "gate_outcome": outcome,
        "summary": {"gate": outcome, "mode": mode},
        "model": {"digest": digest, "model_path": "hf"},
        "champion": {"digest": "c" * 64, "model_path": "hf"} if mode == "champion" else None,
        "suite": {"tasks": ["shipyard_mc"], "versions": {"shipyard_mc": "1"},
                  "data_sha256": {"shipyard_mc": "d" * 64}, "source_sha256": "e" * 64,
                  "lm_eval_version": "0.4.13", "limit_per_task": None},
        "metrics": {"shipyard_mc": {"acc": 0.6, "acc_stderr": 0.05}},
        "samples": {"candidate": {"shipyard_mc": [{}] * 40}, "champion": None},
        "gate": {
            "outcome": outcome, "mode": mode, "reasons": [], "notes": [],
            "checks": [{"name": n, "passed": n not in failed, "detail": n} for n in names],
            "comparisons": [{"task": "shipyard_mc", "metric": "acc", "improvement": 0.02,
                             "interval_low": -0.01, "interval_high": 0.05, "num_pairs": 40}],
        },
        "judge": {"gating": True, "calibration": {"kappa": 0.72},
                  "pairwise": {"win_rate": 0.55, "win_rate_interval_low": 0.48,
                               "win_rate_interval_high": 0.61, "num_valid_pairs": 40}},
        "config": {"gate": {"hard_floors": {"shipyard_mc": 0.3}, "confidence": 0.95,
                            "non_inferiority_margins": {"shipyard_mc": 0.05}},
                   "judge": {"non_inferiority_margin": 0.05}},
    }


def _register(store: Store, model_dir: Path, dataset_files: dict[str, Path], name: str,
              report: dict[str, Any] | None, **overrides: Any) -> RegistrationResult:
    kwargs = stage_kwargs(store, model_dir, dataset_files, name, eval_report=report, **overrides)
    claims = attestation_claims(report) if report is not None else None
    return register_model(RegistrationRequest(**kwargs, eval_claims=claims))


def _verify(store: Store, result: RegistrationResult, policy: Policy) -> VerificationResult:
    pinned = f"sha256:{public_key_fingerprint(store.public_key)}"
    return verify_model(
        result.model_uri, tracking_uri=store.tracking_uri,
        policy=dataclasses.replace(policy, trusted_key_fingerprints=(pinned,)),
        public_key=store.public_key)


def _envelope_path(store: Store, result: RegistrationResult) -> Path:
    return run_artifacts_dir(store, result.mlflow_run_id) / "attestations" / eval_att.KEY_FILE


def _statement(store: Store, result: RegistrationResult) -> dict[str, Any]:
    envelope = json.loads(_envelope_path(store, result).read_text())
    return dict(json.loads(base64.b64decode(envelope["payload"])))


def _refused(store: Store, result: RegistrationResult, policy: Policy) -> RegistryError:
    with pytest.raises(RegistryError) as failure:
        _verify(store, result, policy)
    return failure.value


@pytest.fixture
def passed(store: Store, model_copy: Path, dataset_files: dict[str, Path],
           model_name: str) -> RegistrationResult:
    return _register(store, model_copy, dataset_files, model_name,
                     _report(model_root_digest(model_copy)))


def test_the_eval_result_is_a_signed_test_result_about_the_model(
    store: Store, passed: RegistrationResult
) -> None:
    statement = _statement(store, passed)
    assert statement["predicateType"] == "https://in-toto.io/attestation/test-result/v0.1"
    assert statement["subject"] == [{"name": passed.registered_model_name,
                                     "digest": {"sha256": passed.model_digest}}]
    predicate = statement["predicate"]
    assert predicate["result"] == "PASSED"
    assert predicate["passedTests"] == ["floor:shipyard_mc", "non_inferiority:shipyard_mc",
                                        "judge_win_rate"]
    assert predicate["failedTests"] == [] and predicate["warnedTests"] == []
    assert {"name": "task/shipyard_mc/data", "digest": {"sha256": "d" * 64},
            "annotations": {"version": "1"}} in predicate["configuration"]
    claims = predicate[eval_att.CLAIMS_KEY]
    assert (claims["gate_outcome"], claims["gate_mode"]) == ("PASS", "champion")
    assert claims["champion_digest"] == "c" * 64
    assert (claims["judge_kappa"], claims["judge_gating"]) == (0.72, True)
    floor, non_inferiority, judge = claims["checks"]
    assert floor == {"name": "floor:shipyard_mc", "passed": True, "metric": "acc",
                     "comparator": ">=", "threshold": 0.3, "value": 0.6, "stderr": 0.05,
                     "confidence_interval": None, "sample_size": 40}
    assert non_inferiority["threshold"] == -0.05
    assert non_inferiority["confidence_interval"] == [-0.01, 0.05]
    assert non_inferiority["sample_size"] == 40
    assert judge["threshold"] == pytest.approx(0.45) and judge["value"] == 0.55

    policy = dataclasses.replace(EVAL_ONLY, required_eval_gate="PASS",
                                 required_gate_modes=("champion",),
                                 required_eval_checks=("floor:shipyard_mc", "judge_win_rate"))
    checks = {c.name: c.status for c in _verify(store, passed, policy).checks}
    for name in ("eval_attestation_signature", "eval_attestation_format",
                 "eval_attestation_subject", "policy_eval_gate", "policy_gate_mode",
                 "policy_eval_checks"):
        assert checks[name] == "passed", name


def test_an_edited_eval_attestation_fails_its_signature(
    store: Store, passed: RegistrationResult
) -> None:
    # FAIL -> PASS is the edit an attacker wants; here: claim a check passed that did not.
    path = _envelope_path(store, passed)
    envelope = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["passedTests"].append("ceiling:shipyard_gen")
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(envelope))
    failure = _refused(store, passed, EVAL_ONLY)
    assert (failure.code, failure.check) == ("VERIFICATION_FAILED", "eval_attestation_signature")
    assert failure.found == "an invalid signature"


def test_the_eval_attestation_of_another_model_is_refused(
    store: Store, passed: RegistrationResult, tiny_model_dir: Path,
    dataset_files: dict[str, Path], tmp_path: Path, model_name: str
) -> None:
    other_dir = Path(shutil.copytree(tiny_model_dir, tmp_path / "other"))
    (other_dir / "generation_config.json").write_text('{"max_new_tokens": 8}')
    other = _register(store, other_dir, dataset_files, f"{model_name}-other",
                      _report(model_root_digest(other_dir)))
    # A validly signed eval result (same key), but about the other model.
    shutil.copyfile(_envelope_path(store, other), _envelope_path(store, passed))
    failure = _refused(store, passed, EVAL_ONLY)
    assert failure.check == "eval_attestation_subject"
    assert (failure.expected, failure.found) == (f"sha256:{passed.model_digest}",
                                                 f"sha256:{other.model_digest}")


def test_a_missing_eval_attestation_is_refused(
    store: Store, passed: RegistrationResult
) -> None:
    _envelope_path(store, passed).unlink()
    failure = _refused(store, passed, dataclasses.replace(EVAL_ONLY, required_eval_gate="PASS"))
    assert (failure.check, failure.found) == ("eval_attestation", "missing")
    # Without eval requirements it is still missed: the provenance lists it as a byproduct.
    assert _refused(store, passed, EVAL_ONLY).check == "byproduct_digest"


def test_an_unevaluated_model_has_no_gate_to_show(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> None:
    result = _register(store, model_copy, dataset_files, model_name, None)
    assert not _envelope_path(store, result).exists()
    for policy in (dataclasses.replace(EVAL_ONLY, required_eval_gate="PASS"),
                   dataclasses.replace(EVAL_ONLY, required_gate_modes=("absolute",))):
        assert _refused(store, result, policy).check == "eval_attestation"
    skipped = {c.name: c.status for c in _verify(store, result, EVAL_ONLY).checks}
    assert skipped["eval_attestation"] == "skipped"


@pytest.mark.parametrize(("outcome", "result"), [("FAIL", "FAILED"),
                                                  ("NO_EVIDENCE", "FAILED")])
def test_a_gate_that_did_not_pass_is_refused_even_with_a_forged_tag(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str,
    outcome: str, result: str
) -> None:
    registered = _register(store, model_copy, dataset_files, model_name,
                           _report(model_root_digest(model_copy), outcome=outcome,
                                   failed=("floor:shipyard_mc",)))
    assert _statement(store, registered)["predicate"]["result"] == result
    # The tag says PASS: the policy does not read tags.
    client_for(store.tracking_uri).set_model_version_tag(
        registered.registered_model_name, registered.version, "eval_gate", "PASS")
    failure = _refused(store, registered,
                       dataclasses.replace(EVAL_ONLY, required_eval_gate="PASS"))
    assert (failure.check, failure.expected, failure.found) == ("policy_eval_gate", "PASS",
                                                                outcome)


def test_a_gate_mode_the_policy_does_not_accept_is_refused(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> None:
    registered = _register(store, model_copy, dataset_files, model_name,
                           _report(model_root_digest(model_copy), mode="absolute"))
    failure = _refused(store, registered,
                       dataclasses.replace(EVAL_ONLY, required_gate_modes=("champion",)))
    assert (failure.check, failure.found) == ("policy_gate_mode", "absolute")
    accepted = dataclasses.replace(EVAL_ONLY, required_gate_modes=("champion", "absolute"))
    assert _verify(store, registered, accepted).model_digest == registered.model_digest


def test_a_required_check_that_failed_or_did_not_run_is_refused(
    store: Store, passed: RegistrationResult
) -> None:
    policy = dataclasses.replace(EVAL_ONLY, required_eval_checks=("floor:shipyard_mc",
                                                                 "ceiling:shipyard_gen"))
    failure = _refused(store, passed, policy)
    assert failure.check == "policy_eval_checks"
    assert "ceiling:shipyard_gen" in str(failure.expected)


def test_register_refuses_an_eval_result_about_another_model(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> None:
    with pytest.raises(RegistryError) as failure:
        _register(store, model_copy, dataset_files, model_name, _report("f" * 64))
    assert failure.value.code == "EVAL_REPORT_MISMATCH"
    assert failure.value.found == f"sha256:{'f' * 64}"
    assert not client_for(store.tracking_uri).search_model_versions(f"name = '{model_name}'")


@pytest.mark.unit
@pytest.mark.parametrize("raw", [{"required_gate_modes": ["sometimes"]},
                                 {"required_gate_modes": []},
                                 {"required_eval_checks": [""]}])
def test_eval_policy_keys_are_validated(raw: dict[str, Any]) -> None:
    with pytest.raises(RegistryError) as failure:
        policy_from_dict({"allowed_builder_ids": ["b"], **raw})
    assert failure.value.code == "POLICY_INVALID"


@pytest.mark.unit
def test_eval_policy_keys_read_from_yaml_lists() -> None:
    policy = policy_from_dict({"allowed_builder_ids": ["b"], "required_gate_modes": ["champion"],
                               "required_eval_checks": ["judge_win_rate"]})
    assert policy.required_gate_modes == ("champion",)
    assert policy.required_eval_checks == ("judge_win_rate",)
    assert policy.requires_eval and not Policy(allowed_builder_ids=("b",)).requires_eval
