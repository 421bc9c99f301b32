"""The eval report's judge section: the judge's identity, gating and numbers, and its
calibration against human labels per subset (eval/report.py puts it in the HTML)."""

from __future__ import annotations

import html
from typing import Any

from common.html import format_value, table


def judge_tables(judge: dict[str, Any]) -> str:
    if judge["status"] != "ok":
        return f"<h3>Judge</h3><p>{html.escape(judge['status'])}</p>"
    kind = judge.get("judge_kind", "judge")
    rows: list[list[Any]] = [["judge model", judge["judge_model"]],
                             ["judge source", judge.get("source")],
                             ["judge identity", judge.get("identity")],
                             ["judged task", judge.get("task")],
                             ["judges", "jury of " + ", ".join(judge["jury_members"])
                              if kind == "jury" else "one model (not a jury)"],
                             ["prompts", ", ".join(judge["prompt_ids"].values())],
                             ["gating", judge["gating"]]]
    rows += [["non-gating because", r] for r in judge["non_gating_reasons"]]
    for section in ("calibration", "length_control", "pairwise", "rubric_candidate",
                    "rubric_champion"):
        for key, value in (judge.get(section) or {}).items():
            if key != "per_subset":  # its own table below
                rows.append([f"{section}.{key}", value])
    rows += [[f"lengths.{k}", v] for k, v in judge["lengths"].items()]
    rows += [[f"usage.{k}", v] for k, v in judge["usage"].items()]
    return "<h3>LLM judge</h3>" + table(None, rows) + calibration_table(judge)


def calibration_table(judge: dict[str, Any]) -> str:
    """The judge against human labels per subset, the published judges beside it."""
    calibration = judge.get("calibration") or {}
    if not calibration.get("per_subset"):
        return ""

    def cell(s: dict[str, Any], key: str) -> str:
        return (f"{format_value(s[key])} [{format_value(s[f'{key}_interval_low'])}, "
                f"{format_value(s[f'{key}_interval_high'])}]")

    rows: list[list[Any]] = []
    for s in calibration["per_subset"]:
        rows.append([s["subset"], calibration.get("judge_identity"), s["num_pairs"],
                     cell(s, "accuracy"), cell(s, "accuracy_both_orders"), cell(s, "kappa"),
                     cell(s, "order_agreement")])
        rows += [[s["subset"], f"{r['judge']} ({r['strategy']}, published)", "",
                  r["accuracy_average"], r["accuracy_both_orders"], "",
                  r["order_agreement"]] for r in s["reference_judges"]]
    return ("<h3>Judge calibration on human labels (LLMBar)</h3>" + table(
        ["subset", "judge", "pairs", "accuracy (both orders averaged)",
         "accuracy (both orders right)", "kappa", "order agreement"], rows))
