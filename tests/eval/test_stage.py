"""`run_eval` end to end on the tiny model, and the `evaluate` Flyte task with a champion
registered in a real (sqlite) MLflow store."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from flytekit.types.directory import FlyteDirectory
from mlflow import MlflowClient

from common.cost import CostConfig
from common.digests import sha256_file
from common.errors import StageError
from common.settings import load_settings
from eval.config import EvalConfig, GateConfig, JudgeConfig
from eval.harness import ModelSource
from eval.judge.client import JudgeEndpoint
from eval.stage import run_eval
from tasks.contracts import EvalReport, TrainedModel, ValidatedDataset
from tasks.evaluate import champion_reference, evaluate
from testing.scripted_server import ScriptedServer
from tests.eval.champions import register_champion, tamper_with_weights
from tests.eval.conftest import TinyModel
from tests.eval.judges import reference_judge
from training.config import TrainConfig

pytestmark = pytest.mark.integration

FAST_GATE: dict[str, Any] = {"min_paired_items": 20, "bootstrap_resamples": 500}
FAST = {"limit_per_task": 30, "gate": GateConfig(**FAST_GATE)}


def test_run_eval_against_a_champion_with_a_judge(tiny_model: TinyModel, tmp_path: Path
                                                  ) -> None:
    # The champion is an exact copy of the candidate: every per-item difference is 0.
    champion_dir = tmp_path / "champion"
    shutil.copytree(tiny_model.model_dir, champion_dir)
    config = EvalConfig(**FAST, judge=JudgeConfig(base_url="scripted", max_items=10))  # type: ignore[arg-type]
    with ScriptedServer(reference_judge) as judge:
        outcome = run_eval(
            config, ModelSource(tiny_model.model_dir, tiny_model.digest), work_dir=tmp_path,
            champion=ModelSource(champion_dir, "champion-digest"),
            judge_endpoint=JudgeEndpoint(judge.base_url, "scripted-judge"),
            cache_dir=tmp_path / "cache")
    assert outcome.decision.outcome == "PASS", outcome.decision.reasons
    assert {c.task for c in outcome.decision.comparisons} == {
        "shipyard_mc", "shipyard_exact", "shipyard_ppl"}
    assert all(c.num_pairs == 30 and c.improvement == pytest.approx(0, abs=1e-6)
               for c in outcome.decision.comparisons)
    judge_check = next(c for c in outcome.decision.checks if c.name == "judge_win_rate")
    assert judge_check.passed and outcome.judge.gating
    # Human labels (LLMBar): one LLMEval² pair shows the same text twice, so even a judge that
    # agrees with every annotator is inconsistent there (kappa 0.998, not 1).
    assert outcome.judge.calibration is not None and outcome.judge.calibration.kappa > 0.99
    # Identical answers on both sides: a reference judge calls every pair a tie.
    assert outcome.judge.pairwise is not None and outcome.judge.pairwise.win_rate == 0.5

    report = json.loads(outcome.report_path.read_text())
    assert report["gate_outcome"] == "PASS" and report["champion"]["digest"] == "champion-digest"
    assert report["suite"]["versions"]["shipyard_mc"] == "1.0"
    assert len(report["samples"]["champion"]["shipyard_exact"]) == 30
    assert sha256_file(outcome.report_path) == outcome.report_sha256
    assert "<img" in outcome.html and "Paired comparison with the champion" in outcome.html


def _flyte_inputs(model: TinyModel, dataset_dir: Path) -> tuple[TrainedModel, ValidatedDataset]:
    trained = TrainedModel(FlyteDirectory(str(model.model_dir)), model.digest, {}, {}, [],
                           TrainConfig(), TrainConfig().digest(), model.mlflow_run_id)
    digests: dict[str, str] = {s: sha256_file(dataset_dir / f"{s}.jsonl")
                               for s in ("train", "validation", "eval")}
    dataset = ValidatedDataset(FlyteDirectory(str(dataset_dir)), digests, {}, "0" * 64, "0" * 64)
    return trained, dataset


def test_evaluate_task_compares_with_the_mlflow_champion_and_fails_closed(
        tiny_model: TinyModel, tiny_dataset_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the task's work dirs
    register_champion(tiny_model, tiny_dataset_dir, "shipyard-eval-test")
    trained, dataset = _flyte_inputs(tiny_model, tiny_dataset_dir)
    config = EvalConfig(**FAST, registered_model_name="shipyard-eval-test")  # type: ignore[arg-type]

    champion = champion_reference(config=config)
    assert str(champion) == f"models:/shipyard-eval-test/1 sha256:{tiny_model.digest}"
    report = evaluate(model=trained, dataset=dataset, config=config, champion=champion,
                      prices=CostConfig())

    assert isinstance(report, EvalReport)
    assert report.gate_outcome == "PASS" and report.gate_mode == "champion"
    assert report.champion_version == "1" and report.champion_digest == tiny_model.digest
    assert report.comparisons["shipyard_mc"]["num_pairs"] == 30
    assert report.calibration == {} and not report.judge_gating  # no judge configured
    assert sha256_file(Path(report.report_json.download())) == report.report_digest
    client = MlflowClient(load_settings().mlflow_tracking_uri)
    run = client.get_run(report.mlflow_run_id)
    assert run.data.metrics["eval.gate.passed"] == 1.0
    assert run.data.tags["eval_gate"] == "PASS"
    assert {a.path for a in client.list_artifacts(report.mlflow_run_id, "eval")} == {
        "eval/eval_report.json", "eval/eval_report.html"}

    # A floor the tiny model cannot reach: FAIL stops the stage, the report is still written.
    failing = EvalConfig(limit_per_task=30, registered_model_name="shipyard-eval-test",
                         gate=GateConfig(**FAST_GATE, hard_floors={"shipyard_mc": 0.99}))
    with pytest.raises(StageError) as caught:
        evaluate(model=trained, dataset=dataset, config=failing, champion=champion,
                      prices=CostConfig())
    assert caught.value.code == "EVAL_GATE_FAILED"
    assert "shipyard_mc acc" in caught.value.message and "< floor 0.99" in caught.value.message
    failed_report = json.loads(Path(caught.value.details["report_path"]).read_text())
    assert failed_report["gate_outcome"] == "FAIL"


def test_evaluate_task_refuses_a_tampered_champion_before_measuring_anything(
        tiny_model: TinyModel, tiny_dataset_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    champion = register_champion(tiny_model, tiny_dataset_dir, "shipyard-eval-tampered")
    tamper_with_weights(champion)
    trained, dataset = _flyte_inputs(tiny_model, tiny_dataset_dir)
    config = EvalConfig(**FAST, registered_model_name="shipyard-eval-tampered")  # type: ignore[arg-type]

    with pytest.raises(StageError) as caught:
        evaluate(model=trained, dataset=dataset, config=config,
                 champion=champion_reference(config=config), prices=CostConfig())

    assert caught.value.code == "EVAL_CHAMPION_REJECTED"
    assert caught.value.details["check"] == "model_signature"
    assert "check 'model_signature'" in caught.value.message
    assert f"models:/shipyard-eval-tampered/{champion.version}" in caught.value.message
    # Nothing was measured: no report, no eval metrics in MLflow.
    assert not list(tmp_path.glob("shipyard-eval-*/eval_report.json"))
