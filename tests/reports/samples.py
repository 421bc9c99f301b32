"""Small synthetic stage outcomes for the report tests (no pipeline run): each goes through the
stage's real report code (`render_html`/`report_html` and `overview_facts`)."""

from __future__ import annotations

import math
from typing import Any

from common.html import StageFacts
from data.report import ExpectationResult, ValidationReport
from deploy.decision_record_schema import ChampionMove, DecisionRecord, StableBefore
from deploy.outcomes import Outcome
from tests.deploy.records import finished_record
from training import report as training_report

DIGEST = "3f1c9a0b2d4e" + "0" * 52


def validation_report(*, failing: bool = False) -> ValidationReport:
    results = [
        ExpectationResult("train", "expect_column_values_to_be_unique", "unique_prompt",
                          "prompts are unique", "remove duplicate prompts", "prompt",
                          not failing, 2 if failing else 0, [3, 7] if failing else [], None,
                          "critical"),
        ExpectationResult("train", "expect_table_row_count_to_be_between", "min_rows",
                          "at least 10 rows", "add rows", None, True, None, [], 1200,
                          "critical"),
        ExpectationResult("validation", "expect_column_value_lengths_to_be_between",
                          "response_length", "responses <= 2000 chars", "shorten them",
                          "response", False, 1, [4], None, "warning"),
    ]
    return ValidationReport(results=results, split_rows={"train": 1200, "validation": 150,
                                                         "eval": 150},
                            longest_example_tokens={"train": 87, "validation": 64},
                            great_expectations_version="1.5.0")


def training_outcome() -> tuple[dict[str, float], list[float], dict[int, float],
                                dict[str, str]]:
    loss_curve = [4.2 * math.exp(-step / 60) + 1.1 for step in range(200)]
    val_losses = {100: 2.0, 200: 1.6}
    metrics = {"final_loss": loss_curve[-1], "final_val_loss": 1.6,
               "num_parameters": 1_971_200.0, "mean_step_seconds": 0.21,
               "tokens_per_second": 9731.4, "world_size": 2.0,
               "peak_memory_bytes": 8.92404e08, "mfu": float("nan")}
    facts = {"model digest": f"sha256:{DIGEST}", "model size": "7.53 MiB",
             "MLflow run": "abc123"}
    return metrics, loss_curve, val_losses, facts


def training_facts() -> StageFacts:
    return training_report.overview_facts(*training_outcome())


def eval_report(*, champion: bool) -> dict[str, Any]:
    tasks = ["shipyard_mc", "shipyard_exact"]
    metrics = {"shipyard_mc": {"acc": 0.62, "acc_stderr": 0.04, "num_samples": 50},
               "shipyard_exact": {"exact_match": 0.31, "exact_match_stderr": 0.05,
                                  "num_samples": 30}}
    checks = [{"name": "floor:shipyard_mc", "passed": True, "detail": "acc 0.62 >= 0.25"},
              {"name": "floor:shipyard_exact", "passed": True,
               "detail": "exact_match 0.31 >= 0.05"}]
    comparisons = []
    if champion:
        checks.append({"name": "non_inferiority:shipyard_mc", "passed": True,
                       "detail": "lower bound -0.02 > -0.05"})
        comparisons.append({"task": "shipyard_mc", "metric": "acc", "num_pairs": 50,
                            "candidate_mean": 0.62, "champion_mean": 0.6, "improvement": 0.02,
                            "interval_low": -0.02, "interval_high": 0.06,
                            "mcnemar_p_value": 0.41, "minimum_detectable_effect": 0.08})
    return {
        "schema_version": 1, "gate_outcome": "PASS",
        "summary": {"gate": "PASS", "mode": "champion" if champion else "absolute",
                    "shipyard_mc.acc": 0.62, "shipyard_exact.exact_match": 0.31},
        "model": {"digest": DIGEST, "model_path": "hf"},
        "champion": {"digest": "9" * 64, "model_path": "hf"} if champion else None,
        "suite": {"tasks": tasks, "versions": {t: "1.0" for t in tasks},
                  "data_sha256": {t: "a" * 64 for t in tasks}, "source_sha256": "b" * 64,
                  "shipped_data": True, "lm_eval_version": "0.4.9", "limit_per_task": 50},
        "metrics": metrics,
        "champion_metrics": ({"shipyard_mc": {"acc": 0.6}, "shipyard_exact":
                              {"exact_match": 0.3}} if champion else None),
        "gate": {"outcome": "PASS", "reasons": ["every check passed"], "checks": checks,
                 "comparisons": comparisons, "mode": "champion" if champion else "absolute",
                 "notes": [] if champion else ["no champion: absolute floors and ceilings only"]},
        "judge": {"status": "skipped: no judge endpoint configured"},
        "config": {"gate": {"confidence": 0.95,
                            "non_inferiority_margins": {"shipyard_mc": 0.05}}},
        "timings_seconds": {"candidate": 12.5},
    }


def deploy_record(*, outcome: Outcome = "PASS") -> DecisionRecord:
    timeline = []
    for i, percent in enumerate([10, 10, 10, 50, 50, 50, 100]):
        timeline.append({"t_seconds": 5.0 * i, "canary_percent": percent,
                         "stable": {"ttft_mean_seconds": 0.031, "errors": 0},
                         "canary": {"ttft_mean_seconds": 0.029 + 0.001 * i, "errors": 0}})
    timeline.append({"load": {"requests": 120}})  # load totals: not a point in time
    step = {"canary_percent": 10, "outcome": "PASS", "reasons": ["all checks passed"],
            "checks": [{"name": "error_rate", "status": "PASS",
                        "detail": "error_rate = 0.0000 (limit 0.0500)"}]}
    record = finished_record("models:/shipyard-tiny/3",
                             "promoted" if outcome == "PASS" else "rolled_back", outcome,
                             deployment="shipyard-tiny")
    record.model_digest, record.engine = DIGEST, "vllm"
    record.stable_before = StableBefore("models:/shipyard-tiny/2")
    record.champion = ChampionMove("2", "3", moved=outcome == "PASS")
    record.timeline, record.steps = timeline, [step, {**step, "canary_percent": 50}]
    record.notes = ["synthetic record"]
    return record
