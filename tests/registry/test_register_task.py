"""The Flyte task runs locally end to end: typed inputs in, a RegisteredModel out, the report
written, and the version verifiable with the key the task generated under SHIPYARD_HOME."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flytekit.types.directory import FlyteDirectory
from flytekit.types.file import FlyteFile

from common.cost import CostConfig
from common.digests import model_root_digest, sha256_file
from common.settings import load_settings
from registry.config import RegisterConfig
from registry.policy import load_policy
from registry.verify import verify_model
from tasks.contracts import EvalReport, RegisteredModel, TrainedModel, ValidatedDataset
from tasks.register import register
from tests.registry.conftest import Store
from training.config import TrainConfig

pytestmark = pytest.mark.integration

TRAIN_CONFIG = TrainConfig(max_steps=12)


def test_register_task_returns_a_verifiable_registered_model(
    store: Store,
    model_copy: Path,
    dataset_files: dict[str, Path],
    isolated_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A tracking server is chosen through MLFLOW_TRACKING_URI; here it is the shared store.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    digests: dict[str, str] = {split: sha256_file(path) for split, path in dataset_files.items()}
    trained = TrainedModel(
        model_dir=FlyteDirectory(path=str(model_copy)),
        model_digest=model_root_digest(model_copy),
        dataset_digests=digests,
        metrics={"final_loss": 1.0},
        loss_curve=[2.0, 1.0],
        config=TRAIN_CONFIG,
        config_digest=TRAIN_CONFIG.digest(),
        mlflow_run_id="",  # training without MLflow logging
    )
    dataset = ValidatedDataset(
        files=FlyteDirectory(path=str(dataset_files["train"].parent)),
        split_digests=digests,
        split_rows={split: 3 for split in digests},
        tokenizer_digest="0" * 64,
        report_digest="0" * 64,
    )

    report_path = isolated_home / "eval_report.json"
    report_path.write_text(json.dumps({"gate_outcome": "PASS",
                                       "summary": {"shipyard_mc": {"acc": 0.5}}}))
    evaluation = EvalReport(
        gate_outcome="PASS", gate_reasons=["absolute floors met"], gate_mode="absolute",
        model_digest=trained.model_digest, champion_version=None, champion_digest=None,
        model_path="hf", metrics={"shipyard_mc": {"acc": 0.5}}, comparisons={}, judge={},
        judge_gating=False, judge_non_gating_reasons=["no judge"], calibration={},
        task_versions={}, task_data_digests={}, report_json=FlyteFile(path=str(report_path)),
        report_digest=sha256_file(report_path), mlflow_run_id="",
    )

    result = register(model=trained, dataset=dataset, config=RegisterConfig(),
                      prices=CostConfig(),
                      evaluation=evaluation)

    assert isinstance(result, RegisteredModel)
    assert result.model_uri == "models:/shipyard-tiny/1"
    assert result.model_digest == trained.model_digest
    assert result.aliases == ["challenger"] and result.created
    settings = load_settings()
    assert settings.home == isolated_home / ".shipyard"
    reports = list(settings.reports_dir.rglob("register.html"))
    assert reports and "shipyard verify models:/shipyard-tiny/1" in reports[0].read_text()
    verified = verify_model(
        "models:/shipyard-tiny@challenger",
        tracking_uri=settings.mlflow_tracking_uri,
        policy=load_policy(keys_dir=settings.keys_dir),  # the local trust policy
        public_key=settings.keys_dir / "signing.pub",
    )
    assert verified.model_digest == result.model_digest
    # the default policy requires a passed eval gate, which the signed provenance carries
    assert any(c.name == "policy_eval_gate" and c.status == "passed" for c in verified.checks)


def test_register_task_refuses_an_eval_report_about_another_model(
    store: Store, model_copy: Path, dataset_files: dict[str, Path], isolated_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    digests: dict[str, str] = {split: sha256_file(path) for split, path in dataset_files.items()}
    trained = TrainedModel(
        model_dir=FlyteDirectory(path=str(model_copy)), model_digest=model_root_digest(model_copy),
        dataset_digests=digests, metrics={}, loss_curve=[],
        config=TRAIN_CONFIG, config_digest=TRAIN_CONFIG.digest(), mlflow_run_id="",
    )
    dataset = ValidatedDataset(
        files=FlyteDirectory(path=str(dataset_files["train"].parent)), split_digests=digests,
        split_rows={split: 3 for split in digests}, tokenizer_digest="0" * 64,
        report_digest="0" * 64,
    )
    report_path = isolated_home / "eval_report.json"
    report_path.write_text(json.dumps({"gate_outcome": "PASS"}))
    evaluation = EvalReport(
        gate_outcome="PASS", gate_reasons=[], gate_mode="absolute", model_digest="f" * 64,
        champion_version=None, champion_digest=None, model_path="hf", metrics={}, comparisons={},
        judge={}, judge_gating=False, judge_non_gating_reasons=[], calibration={},
        task_versions={}, task_data_digests={}, report_json=FlyteFile(path=str(report_path)),
        report_digest=sha256_file(report_path), mlflow_run_id="",
    )
    with pytest.raises(Exception, match="EVAL_REPORT_MISMATCH"):
        register(model=trained, dataset=dataset, config=RegisterConfig(), prices=CostConfig(),
                 evaluation=evaluation)
