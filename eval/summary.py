"""`EvalSummary`: what the evaluate stage returns, typed and flat, for any caller to read
without digging through the JSON report (which keeps every number and sample)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from eval.champion import Champion
from eval.config_gate import report_gate_config
from eval.errors import EvalError
from eval.stage import EvalOutcome
from eval.suite.specs import TASK_SPECS

GateOutcome = Literal["PASS", "FAIL", "NO_EVIDENCE"]
GateMode = Literal["champion", "absolute"]
# The gate's string values, typed (a KeyError here is a bug in the gate, not a user error).
_OUTCOMES: dict[str, GateOutcome] = {"PASS": "PASS", "FAIL": "FAIL", "NO_EVIDENCE": "NO_EVIDENCE"}
_MODES: dict[str, GateMode] = {"champion": "champion", "absolute": "absolute"}


@dataclass(frozen=True)
class EvalSummary:
    # PASS, FAIL or NO_EVIDENCE (nothing was gated); anything but PASS is reported, and
    # `require_pass` turns it into EVAL_GATE_FAILED.
    outcome: GateOutcome
    # FAIL: every failed check; PASS: every check that passed (or why nothing was gated).
    reasons: tuple[str, ...]
    # "champion" (paired comparison) or "absolute" (no champion: hard bounds only).
    mode: GateMode
    # model-signing root digest of the evaluated model.
    model_digest: str
    # The champion compared with (verified): MLflow version and digest; None without one.
    champion_version: str | None
    champion_digest: str | None
    # "hf" or "local-completions".
    model_path: str
    # task -> {metric: value, "<metric>_stderr": standard error, "num_samples": n}
    metrics: dict[str, dict[str, float]]
    # task -> {improvement, interval_low, interval_high, mcnemar_p_value,
    #          minimum_detectable_effect, num_pairs, margin} against the champion
    comparisons: dict[str, dict[str, float]]
    # headline judge numbers (win rate and interval, consistency, invalid outputs, rubric
    # mean score, usage); empty without a judge
    judge: dict[str, float]
    judge_gating: bool
    judge_non_gating_reasons: tuple[str, ...]
    # calibration on human labels (LLMBar, pooled): kappa, order_agreement, accuracy, ...
    calibration: dict[str, float]
    # lm-eval task -> metadata.version, and -> sha256 of its JSONL data
    task_versions: dict[str, str]
    task_data_digests: dict[str, str]
    # The JSON report, its sha256, and the HTML rendering (also logged to MLflow).
    report_path: Path
    report_digest: str
    report_html: str
    # MLflow run the metrics and the report were logged to.
    mlflow_run_id: str

    def require_pass(self) -> None:
        """EvalError EVAL_GATE_FAILED unless the gate passed (the report is written either way)."""
        if self.outcome != "PASS":
            raise EvalError("EVAL_GATE_FAILED",
                            "the candidate did not pass the promotion gate: "
                            + "; ".join(self.reasons)
                            + f". Report: {self.report_path} (MLflow run {self.mlflow_run_id}, "
                            "eval/).",
                            details={"report_path": str(self.report_path)})


def summarize(outcome: EvalOutcome, champion: Champion | None, run_id: str) -> EvalSummary:
    report = outcome.report
    judge = report["judge"]
    margins = report_gate_config(report["config"]).get("non_inferiority_margins") or {}
    return EvalSummary(
        outcome=_OUTCOMES[outcome.decision.outcome],
        reasons=tuple(outcome.decision.reasons),
        mode=_MODES[outcome.decision.mode],
        model_digest=outcome.candidate.model_digest,
        champion_version=champion.version if champion else None,
        champion_digest=champion.digest if champion else None,
        model_path=outcome.candidate.model_path,
        metrics={t: _finite(m) for t, m in outcome.candidate.metrics.items()},
        comparisons={c["task"]: _finite({**c, "margin": margins.get(c["task"])})
                     for c in report["gate"]["comparisons"]},
        judge=_finite({**(judge.get("pairwise") or {}),
                       **{k: (judge.get("length_control") or {}).get(k)
                          for k in ("lc_win_rate", "lc_win_rate_interval_low",
                                    "lc_win_rate_interval_high", "tie_rate")},
                       "rubric_candidate_mean_score":
                           (judge.get("rubric_candidate") or {}).get("mean_score"),
                       **{f"usage_{k}": v for k, v in (judge.get("usage") or {}).items()}}),
        judge_gating=bool(judge.get("gating")),
        judge_non_gating_reasons=tuple(judge.get("non_gating_reasons") or ()),
        calibration=_finite(judge.get("calibration") or {}),
        task_versions=dict(report["suite"]["versions"]),
        task_data_digests=dict(report["suite"]["data_sha256"]),
        report_path=outcome.report_path,
        report_digest=outcome.report_sha256,
        report_html=outcome.html,
        mlflow_run_id=run_id,
    )


def _finite(values: dict[str, Any]) -> dict[str, float]:
    """Numeric, finite entries only (NaN/None/text stay in the JSON report)."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and v == v and abs(v) != float("inf")}


def attestation_claims(report: Mapping[str, Any]) -> dict[str, Any]:
    """Shipyard's claims about the gate for the signed eval attestation, from the JSON report
    (the artifact of record register receives): per check the metric, comparator, threshold,
    value, interval and sample size; the champion compared with; the judge's kappa and
    whether it gated. The gate outcome and mode are added by the registry from the report."""
    config = report.get("config") or {}
    judge = report.get("judge") or {}
    champion = report.get("champion") or {}
    gate = report.get("gate") or {}
    checks = [_check_claim(check, report, config, gate, judge)
              for check in gate.get("checks") or []]
    return {
        "champion_digest": champion.get("digest"),
        "judge_kappa": (judge.get("calibration") or {}).get("kappa"),
        "judge_gating": bool(judge.get("gating")),
        "confidence": report_gate_config(config).get("confidence"),
        "checks": checks,
    }


def _check_claim(check: Mapping[str, Any], report: Mapping[str, Any],
                 config: Mapping[str, Any], gate: Mapping[str, Any],
                 judge: Mapping[str, Any]) -> dict[str, Any]:
    name = str(check.get("name"))
    kind, _, task = name.partition(":")
    claim: dict[str, Any] = {"name": name, "passed": bool(check.get("passed"))}
    if kind in ("floor", "ceiling") and task in TASK_SPECS:
        metric = TASK_SPECS[task].primary_metric
        values = (report.get("metrics") or {}).get(task) or {}
        gate_config = report_gate_config(config)
        bounds = gate_config.get("hard_floors" if kind == "floor" else "hard_ceilings") or {}
        samples = ((report.get("samples") or {}).get("candidate") or {}).get(task)
        claim.update(metric=metric, comparator=">=" if kind == "floor" else "<=",
                     threshold=bounds.get(task), value=values.get(metric),
                     stderr=values.get(f"{metric}_stderr"), confidence_interval=None,
                     sample_size=len(samples) if samples is not None else None)
    elif kind == "non_inferiority":
        comparison: Mapping[str, Any] = next(
            (c for c in gate.get("comparisons") or [] if c.get("task") == task), {})
        margin = (report_gate_config(config).get("non_inferiority_margins") or {}).get(task)
        claim.update(metric=f"{comparison.get('metric')} improvement over the champion",
                     comparator=">", threshold=None if margin is None else -margin,
                     value=comparison.get("improvement"),
                     confidence_interval=[comparison.get("interval_low"),
                                          comparison.get("interval_high")],
                     sample_size=comparison.get("num_pairs"))
    elif name == "judge_win_rate" and judge.get("length_control"):
        lc = judge["length_control"]
        margin = judge_margin(config)
        claim.update(metric="judge length-controlled pairwise win rate", comparator=">",
                     threshold=None if margin is None else 0.5 - margin,
                     value=lc.get("lc_win_rate"),
                     confidence_interval=[lc.get("lc_win_rate_interval_low"),
                                          lc.get("lc_win_rate_interval_high")],
                     sample_size=lc.get("num_pairs"))
    elif name == "judge_win_rate":
        pairwise = judge.get("pairwise") or {}
        margin = judge_margin(config)
        claim.update(metric="judge pairwise win rate", comparator=">",
                     threshold=None if margin is None else 0.5 - margin,
                     value=pairwise.get("win_rate"),
                     confidence_interval=[pairwise.get("win_rate_interval_low"),
                                          pairwise.get("win_rate_interval_high")],
                     sample_size=pairwise.get("num_valid_pairs"))
    return claim


def judge_margin(config: Mapping[str, Any]) -> float | None:
    """eval.judge.non_inferiority_margin of a report's config: nested since the judge got its
    own section, flat (`judge_non_inferiority_margin`) in reports written before."""
    judge = config.get("judge")
    if isinstance(judge, Mapping) and "non_inferiority_margin" in judge:
        value = judge["non_inferiority_margin"]
    else:
        value = config.get("judge_non_inferiority_margin")
    return None if value is None else float(value)
