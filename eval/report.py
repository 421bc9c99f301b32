"""The eval report: one JSON document (the artifact of record) and its HTML rendering.

The JSON keeps everything a reviewer needs to re-check the decision: the gate's checks and
numbers, per-task metrics of both models, every per-sample result (doc hash, metric values,
generated text), task versions and data digests, the judge's summary and calibration, and
the resolved config. NaN/inf become null so the file is strict JSON. Top-level
``gate_outcome`` and ``summary`` are what registration records (tags, provenance).

Modules: report_judge.py (the HTML's judge section and calibration table), report_plot.py
(the metrics plot); this module builds the JSON and the rest of the HTML.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import math
from pathlib import Path
from typing import Any

from common.fs import SHARED_FILE_MODE, atomic_write_bytes
from common.html import StageFacts, format_value, short_digest, table
from common.redact import redact
from eval.config_gate import report_gate_config
from eval.gate import GateDecision
from eval.harness import HarnessResult
from eval.judge.run import JudgeReport
from eval.report_judge import calibration_table, judge_tables
from eval.report_plot import metrics_figure, plot_html
from eval.suite.specs import TASK_SPECS, Suite

# The public API, wherever each part now lives (the judge section and the plot have modules
# of their own; callers and tests import them from here).
__all__ = [
    "SCHEMA_VERSION",
    "build_report",
    "calibration_table",
    "gate_table",
    "jsonable",
    "metrics_figure",
    "mlflow_metrics",
    "overview_facts",
    "render_html",
    "side_by_side",
    "summary",
    "write_json",
]

SCHEMA_VERSION = 1


def build_report(*, decision: GateDecision, candidate: HarnessResult,
                 champion: HarnessResult | None, judge: JudgeReport, suite: Suite,
                 config: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    # Redacted: the config and the judge carry URLs that may hold credentials (judge and
    # completions base URLs); the report is what MLflow, registration and the deck get.
    return redact(jsonable({
        "schema_version": SCHEMA_VERSION,
        "gate_outcome": decision.outcome,
        "summary": summary(decision, candidate, judge),
        "model": {"digest": candidate.model_digest, "model_path": candidate.model_path},
        "champion": None if champion is None else {"digest": champion.model_digest,
                                                   "model_path": champion.model_path},
        "suite": {"tasks": list(suite.tasks), "versions": suite.versions,
                  "data_sha256": suite.data_digests, "source_sha256": suite.source_sha256,
                  "shipped_data": suite.shipped, "lm_eval_version": candidate.lm_eval_version,
                  "limit_per_task": candidate.config.get("limit_per_task"),
                  # per-task limits that override limit_per_task (ifeval_limit)
                  "task_limits": candidate.config.get("task_limits", {}),
                  # tokens generated per item: a cap changes a generation task's scores
                  "max_gen_tokens": suite.max_gen_tokens,
                  "chat_source_sha256": suite.chat_source_sha256},
        "prompting": {"candidate": _prompting(candidate),
                      "champion": None if champion is None else _prompting(champion)},
        "metrics": candidate.metrics,
        "champion_metrics": None if champion is None else champion.metrics,
        "gate": dataclasses.asdict(decision),
        "judge": judge.to_dict(),
        "samples": {"candidate": _samples(candidate),
                    "champion": None if champion is None else _samples(champion)},
        "config": config,
        "timings_seconds": timings,
    }))


def summary(decision: GateDecision, candidate: HarnessResult, judge: JudgeReport
            ) -> dict[str, Any]:
    """A few headline numbers (fits an MLflow tag)."""
    out: dict[str, Any] = {"gate": decision.outcome, "mode": decision.mode}
    for task, metrics in candidate.metrics.items():
        metric = TASK_SPECS[task].primary_metric
        out[f"{task}.{metric}"] = metrics.get(metric)
    if judge.pairwise is not None:
        out["judge.win_rate"] = judge.pairwise.win_rate
    if judge.length_control is not None:
        out["judge.lc_win_rate"] = judge.length_control.lc_win_rate
    if judge.calibration is not None:
        out["judge.kappa"] = judge.calibration.kappa
    out["judge.gating"] = judge.gating
    return out


def _prompting(result: HarnessResult) -> dict[str, Any]:
    """Whether the model was prompted through its chat template, and with what system
    message (generation and multiple-choice prompts; perplexity has none)."""
    return {"chat_template_applied": bool(result.config.get("chat_template_applied")),
            "system_instruction": result.config.get("system_instruction")}


def _samples(result: HarnessResult) -> dict[str, list[dict[str, Any]]]:
    return {task: [{"doc_id": s.doc_id, "doc_hash": s.doc_hash, "metrics": s.metrics,
                    "output": s.output} for s in samples]
            for task, samples in result.samples.items()}


def jsonable(value: Any) -> Any:
    """Dataclasses, tuples and NaN made strict-JSON friendly."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(report: dict[str, Any], path: Path) -> str:
    """Write the report (temp file + rename); returns its sha256."""
    data = (json.dumps(report, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data, mode=SHARED_FILE_MODE)
    return hashlib.sha256(data).hexdigest()


def mlflow_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Flat numeric metrics: eval.<task>.<metric>, eval.judge.*, eval.gate.passed."""
    out: dict[str, float] = {"eval.gate.passed": float(report["gate_outcome"] == "PASS")}
    for task, metrics in report["metrics"].items():
        for name, value in metrics.items():
            if isinstance(value, (int, float)):
                out[f"eval.{task}.{name}"] = float(value)
    for comparison in report["gate"]["comparisons"]:
        prefix = f"eval.vs_champion.{comparison['task']}"
        for key in ("improvement", "interval_low", "interval_high", "mcnemar_p_value",
                    "minimum_detectable_effect"):
            if isinstance(comparison.get(key), (int, float)):
                out[f"{prefix}.{key}"] = float(comparison[key])
    judge = report["judge"]
    for section, keys in (("pairwise", ("win_rate", "win_rate_interval_low",
                                        "win_rate_interval_high", "position_consistency_rate",
                                        "invalid_output_rate")),
                          ("length_control", ("lc_win_rate", "lc_win_rate_interval_low",
                                              "lc_win_rate_interval_high", "tie_rate")),
                          ("calibration", ("kappa", "agreement", "order_agreement",
                                           "accuracy")),
                          ("rubric_candidate", ("mean_score",))):
        for key in keys:
            value = (judge.get(section) or {}).get(key)
            if isinstance(value, (int, float)):
                out[f"eval.judge.{section}.{key}"] = float(value)
    for key, value in (judge.get("usage") or {}).items():
        out[f"eval.judge.usage.{key}"] = float(value)
    return out


# ---- HTML ------------------------------------------------------------------------------------

def render_html(report: dict[str, Any]) -> str:
    gate = report["gate"]
    css = "verdict-pass" if report["gate_outcome"] == "PASS" else "verdict-fail"
    parts = [
        f"<h2 class='{css}'>Gate: {html.escape(report['gate_outcome'])} "
        f"({html.escape(gate['mode'])})</h2>",
        _list("Reasons", gate["reasons"]),
        _list("Notes", gate["notes"]) if gate["notes"] else "",
        "<h3>Gate checks</h3>" + table(*gate_table(report)),
        _identity_table(report),
        _metrics_table(report),
        _comparisons_table(report),
        _generations_table(report),
        judge_tables(report["judge"]),
        plot_html(report),
    ]
    return "\n".join(p for p in parts if p)


def gate_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Every check the gate made: name, pass/FAIL, what was compared."""
    rows = [[c["name"], "pass" if c["passed"] else "FAIL", c["detail"]]
            for c in report["gate"]["checks"]]
    return ["check", "result", "detail"], rows


def overview_facts(report: dict[str, Any]) -> StageFacts:
    """The run overview's view: gate outcome, its checks, the headline metrics."""
    gate = report["gate"]
    passed = sum(1 for c in gate["checks"] if c["passed"])
    headline = (f"gate {report['gate_outcome']} ({gate['mode']}): {passed} of "
                f"{len(gate['checks'])} checks passed")
    facts = [("candidate", short_digest(report["model"]["digest"])),
             ("champion", short_digest((report["champion"] or {}).get("digest"))
              if report["champion"] else "none (absolute bounds only)")]
    champion_metrics = report.get("champion_metrics") or {}
    for key, value in (report.get("summary") or {}).items():
        if key in ("gate", "mode"):
            continue
        task, _, metric = key.partition(".")
        champion_value = (champion_metrics.get(task) or {}).get(metric)
        facts.append((key, format_value(value) if champion_value is None else
                      f"{format_value(value)} (champion {format_value(champion_value)})"))
    return StageFacts(headline=headline, facts=facts, table=gate_table(report))


def _list(title: str, items: list[str]) -> str:
    lis = "".join(f"<li>{html.escape(str(i))}</li>" for i in items)
    return f"<h3>{html.escape(title)}</h3><ul>{lis}</ul>"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    return table([h for h in headers] if any(headers) else None, rows)


def _fmt(value: Any) -> str:
    return format_value(value)


def _identity_table(report: dict[str, Any]) -> str:
    suite = report["suite"]
    rows = [["candidate digest", report["model"]["digest"]],
            ["model path", report["model"]["model_path"]],
            ["champion digest", (report["champion"] or {}).get("digest")],
            ["lm-eval", suite["lm_eval_version"]],
            ["documents per task", suite["limit_per_task"]]]
    rows += [[f"documents of {t}", n] for t, n in (suite.get("task_limits") or {}).items()]
    rows += [[f"max generated tokens of {t}", n]
             for t, n in (suite.get("max_gen_tokens") or {}).items()]
    for who, prompting in (report.get("prompting") or {}).items():
        if prompting is not None:
            rows.append([f"{who} chat template", "applied" if prompting[
                "chat_template_applied"] else "not applied (text prompts)"])
    rows += [[f"{t} (v{suite['versions'][t]})", suite["data_sha256"][t]] for t in suite["tasks"]]
    return "<h3>What was evaluated</h3>" + _table(["", ""], rows)


def _metrics_table(report: dict[str, Any]) -> str:
    champion = report["champion_metrics"]
    rows = []
    for task, metrics in report["metrics"].items():
        for name, value in metrics.items():
            if name.endswith("_stderr") or name == "num_samples":
                continue
            row = [task, name, value, metrics.get(f"{name}_stderr")]
            if champion is not None:  # no empty champion column without a champion
                row.append((champion.get(task) or {}).get(name))
            rows.append([*row, metrics.get("num_samples")])
    headers = ["task", "metric", "candidate", "stderr",
               *(["champion"] if champion is not None else []), "documents"]
    return "<h3>Task metrics</h3>" + _table(headers, rows)


def _comparisons_table(report: dict[str, Any]) -> str:
    comparisons = report["gate"]["comparisons"]
    if not comparisons:
        return ""
    gate = report_gate_config(report["config"])
    margins = gate.get("non_inferiority_margins") or {}
    rows = [[c["task"], c["metric"], c["num_pairs"], c["candidate_mean"], c["champion_mean"],
             c["improvement"], f"[{_fmt(c['interval_low'])}, {_fmt(c['interval_high'])}]",
             margins.get(c["task"]), c["mcnemar_p_value"], c["minimum_detectable_effect"]]
            for c in comparisons]
    return "<h3>Paired comparison with the champion</h3>" + _table(
        ["task", "metric", "pairs", "candidate", "champion", "improvement",
         f"{2 * gate['confidence'] - 1:.0%} interval", "margin", "McNemar p",
         "MDE"], rows)


# Generated answers shown side by side per generation task: enough to see what changed.
SIDE_BY_SIDE_SAMPLES = 4


def side_by_side(report: dict[str, Any], per_task: int = SIDE_BY_SIDE_SAMPLES
                 ) -> list[dict[str, Any]]:
    """The first `per_task` paired items of each generation task: doc id, the champion's and
    the candidate's answers and primary metric (the same documents, paired by doc id)."""
    samples = report.get("samples") or {}
    champion_samples = samples.get("champion") or {}
    out = []
    for task, candidate_items in (samples.get("candidate") or {}).items():
        spec = TASK_SPECS.get(task)
        if spec is None or not spec.generates:
            continue
        champion_by_doc = {s["doc_id"]: s for s in champion_samples.get(task, [])}
        for item in candidate_items[:per_task]:
            other = champion_by_doc.get(item["doc_id"]) or {}
            out.append({"task": task, "doc_id": item["doc_id"],
                        "metric": spec.primary_metric,
                        "champion_output": other.get("output"),
                        "champion_score": (other.get("metrics") or {}).get(spec.primary_metric),
                        "candidate_output": item["output"],
                        "candidate_score": item["metrics"].get(spec.primary_metric)})
    return out


def _generations_table(report: dict[str, Any]) -> str:
    rows = [[r["task"], r["doc_id"], _shorten(r["champion_output"]), r["champion_score"],
             _shorten(r["candidate_output"]), r["candidate_score"]]
            for r in side_by_side(report)]
    if not rows:
        return ""
    return ("<h3>Generations side by side (first items of each generation task)</h3>"
            + _table(["task", "doc", "champion answer", "score", "candidate answer", "score"],
                     rows))


def _shorten(text: str | None, limit: int = 240) -> str | None:
    """A long answer cut for the table (the JSON report keeps it whole)."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"… ({len(text):,} characters)"
