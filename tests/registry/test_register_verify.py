"""Register -> verify on a real sqlite MLflow: what a user sees in the registry and that the
registered version verifies, idempotently and without touching `champion`."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from common.digests import model_root_digest, sha256_file
from registry.errors import RegistryError
from registry.mlflow_registry import client_for
from registry.policy import Policy, load_policy
from registry.stage import RegistrationRequest, register_model
from registry.verify import verify_model
from tests.registry.conftest import Store, register, run_artifacts_dir, stage_kwargs

pytestmark = pytest.mark.integration


def test_register_then_verify_passes(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> None:
    digest = model_root_digest(model_copy)
    result = register(
        store,
        model_copy,
        dataset_files,
        model_name,
        eval_report={"gate_outcome": "PASS", "summary": {"exact_match": 0.5}},
    )

    assert result.created and result.version == "1"
    assert result.model_uri == f"models:/{model_name}/1"
    assert result.model_digest == digest
    assert result.aliases == ("challenger",)
    assert result.signer.startswith("sha256:")

    client = client_for(store.tracking_uri)
    version = client.get_model_version(model_name, "1")
    tags = version.tags
    assert tags["model_digest"] == digest
    assert tags["dataset_digest.train"] == sha256_file(dataset_files["train"])
    assert tags["config_digest"] and tags["source_commit"]
    assert tags["flyte_execution_id"] == "local:development:test-execution"
    assert json.loads(tags["eval_summary"]) == {"exact_match": 0.5}
    assert tags["eval_gate"] == "PASS"
    assert tags["signature_uri"] == f"runs:/{version.run_id}/attestations/model.sig"
    assert tags["provenance_uri"].endswith("/attestations/provenance.dsse.json")

    # Dataset lineage through MLflow dataset inputs, with the full sha256 of each split.
    run_inputs = client.get_run(result.mlflow_run_id).inputs
    assert run_inputs is not None
    inputs = run_inputs.dataset_inputs
    by_split = {i.dataset.name: {t.key: t.value for t in i.tags} for i in inputs}
    assert sorted(by_split) == ["eval", "train", "validation"]
    assert by_split["train"]["sha256"] == sha256_file(dataset_files["train"])

    # The signature lies next to the model, not inside it: the logged model dir has the
    # same identity as the trained one.
    logged_model = run_artifacts_dir(store, result.mlflow_run_id) / "model"
    assert model_root_digest(logged_model) == digest

    verified = verify_model(
        f"models:/{model_name}@challenger",
        tracking_uri=store.tracking_uri,
        policy=Policy(
            allowed_builder_ids=("urn:shipyard:builder:flyte-local",),
            required_eval_gate="PASS",
            trusted_key_fingerprints=(result.signer,),  # pins the test key
        ),
        public_key=store.public_key,
    )
    assert verified.model_digest == digest
    assert verified.version == "1"
    assert verified.builder_id == "urn:shipyard:builder:flyte-local"
    passed = {c.name for c in verified.checks if c.status == "passed"}
    assert {
        "model_signature",
        "provenance_signature",
        "provenance_subject",
        "mlflow_tag",
        "policy_builder",
        "policy_eval_gate",
        "byproduct_digest",
    } <= passed


def test_provenance_is_slsa_v1_about_the_model(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> None:
    result = register(
        store,
        model_copy,
        dataset_files,
        model_name,
        container_image="ghcr.io/o/shipyard@sha256:" + "a" * 64,
    )
    artifacts = run_artifacts_dir(store, result.mlflow_run_id) / "attestations"
    envelope = json.loads((artifacts / "provenance.dsse.json").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    predicate = statement["predicate"]
    build = predicate["buildDefinition"]
    run = predicate["runDetails"]

    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"][0]["digest"]["sha256"] == result.model_digest
    assert build["buildType"].endswith("registry/BUILD_TYPE.md#v1")
    assert build["externalParameters"]["train_config"]["model_preset"] == "tiny"
    assert build["externalParameters"]["register_config"]["registered_model_name"] == model_name
    assert build["internalParameters"]["signing_mode"] == "key"
    deps = {d["name"]: d for d in build["resolvedDependencies"]}
    assert deps["source"]["digest"]["gitCommit"] == result.source_commit
    assert deps["dataset/train"]["digest"]["sha256"] == sha256_file(dataset_files["train"])
    assert deps["container_image"]["digest"]["sha256"] == "a" * 64
    assert run["builder"]["id"] == "urn:shipyard:builder:flyte-local"
    assert run["metadata"]["invocationId"] == "local:development:test-execution"
    assert run["metadata"]["startedOn"] <= run["metadata"]["finishedOn"]
    sbom = next(b for b in run["byproducts"] if b["name"] == "sbom.cdx.json")
    assert sbom["digest"]["sha256"] == sha256_file(artifacts / "sbom.cdx.json")
    assert json.loads((artifacts / "sbom.cdx.json").read_text())["specVersion"] == "1.5"


def test_reregistering_the_same_digest_returns_the_existing_version(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> None:
    first = register(store, model_copy, dataset_files, model_name)
    runs_before = _run_count(store)
    again = register(store, model_copy, dataset_files, model_name)

    assert not again.created
    assert (again.version, again.model_digest, again.provenance_uri) == (
        first.version,
        first.model_digest,
        first.provenance_uri,
    )
    assert _versions(store, model_name) == ["1"]
    assert _run_count(store) == runs_before  # nothing was logged a second time


def test_champion_is_never_moved_by_registration(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> None:
    client = client_for(store.tracking_uri)
    first = register(store, model_copy, dataset_files, model_name)
    client.set_registered_model_alias(model_name, "champion", first.version)  # deploy did it

    (model_copy / "README.md").write_text("a second model\n")
    second = register(store, model_copy, dataset_files, model_name)
    aliases = client.get_registered_model(model_name).aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "1", "challenger": "2"}
    assert second.aliases == ("challenger",)

    # Registering the champion's digest again changes nothing: it has nothing to challenge.
    (model_copy / "README.md").unlink()
    again = register(store, model_copy, dataset_files, model_name)
    assert again.version == "1" and not again.created
    aliases = client.get_registered_model(model_name).aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "1", "challenger": "2"}


def test_register_refuses_files_that_are_not_the_trained_model(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], model_name: str
) -> None:
    kwargs = stage_kwargs(store, model_copy, dataset_files, model_name)
    (model_copy / "config.json").write_text("{}")  # changed after training
    with pytest.raises(RegistryError) as failure:
        register_model(RegistrationRequest(**kwargs))
    assert failure.value.code == "MODEL_DIGEST_MISMATCH"
    assert failure.value.expected == kwargs["model_digest"]
    assert failure.value.found == model_root_digest(model_copy)
    assert _versions(store, model_name) == []


def test_register_refuses_a_dataset_that_is_not_the_training_data(
    store: Store,
    model_copy: Path,
    dataset_files: dict[str, Path],
    model_name: str,
    tmp_path: Path,
) -> None:
    kwargs = stage_kwargs(store, model_copy, dataset_files, model_name)
    other_train = tmp_path / "train.jsonl"
    other_train.write_text('{"id": "x", "prompt": "p", "response": "r"}\n')
    kwargs["dataset_files"] = {**dataset_files, "train": other_train}
    with pytest.raises(RegistryError) as failure:
        register_model(RegistrationRequest(**kwargs))
    assert failure.value.code == "DATASET_DIGEST_MISMATCH"
    assert "train" in failure.value.message
    assert _versions(store, model_name) == []


def test_a_registration_failing_the_policy_is_rolled_back(
    store: Store,
    model_copy: Path,
    dataset_files: dict[str, Path],
    model_name: str,
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "allowed_builder_ids: [urn:shipyard:builder:flyte-local]\nrequired_eval_gate: PASS\n"
    )
    with pytest.raises(RegistryError) as failure:
        register(
            store,
            model_copy,
            dataset_files,
            model_name,
            policy_path=str(policy),
            eval_report={"gate_outcome": "FAIL"},
        )
    assert failure.value.code == "SELF_CHECK_FAILED"
    assert failure.value.check == "policy_eval_gate"
    assert _versions(store, model_name) == []
    assert load_policy(policy).required_eval_gate == "PASS"


def _versions(store: Store, name: str) -> list[str]:
    found = client_for(store.tracking_uri).search_model_versions(f"name = '{name}'")
    return sorted(str(v.version) for v in found)


def _run_count(store: Store) -> int:
    client = client_for(store.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(experiments, max_results=1000))
