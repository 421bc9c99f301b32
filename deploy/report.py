"""The decision record as a human report: a timeline plot (canary weight, TTFT per track,
errors) and the table of checks of every step; shown as a Flyte Deck and saved as HTML."""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to PNG in memory
import matplotlib.pyplot as plt

from common.html import (
    LineChart,
    Series,
    StageFacts,
    format_duration,
    key_value_table,
    page,
    short_digest,
    table,
)
from common.redact import redact
from deploy.decision_record_schema import DecisionRecord


def timeline_png(typed: DecisionRecord) -> bytes:
    record = typed.to_dict()
    points = _timeline_points(record)
    fig, (ax_weight, ax_ttft, ax_err) = plt.subplots(3, 1, figsize=(8, 6.5), sharex=True)
    t = [p["t_seconds"] for p in points]
    ax_weight.step(t, [p["canary_percent"] for p in points], where="post", color="tab:orange")
    ax_weight.set_ylabel("canary %")
    ax_weight.set_ylim(-5, 105)
    for track, color in (("stable", "tab:blue"), ("canary", "tab:orange")):
        ttft = [(p[track]["ttft_mean_seconds"] or float("nan")) * 1000 for p in points]
        ax_ttft.plot(t, ttft, marker=".", color=color, label=track)
        ax_err.plot(t, [p[track]["errors"] for p in points], marker=".", color=color, label=track)
    ax_ttft.set_ylabel("mean TTFT (ms)")
    ax_ttft.legend(loc="upper left")
    ax_err.set_ylabel("5xx per interval")
    ax_err.set_xlabel("seconds since rollout start")
    fig.suptitle(f"{record.get('deployment')}: {record.get('outcome')} ({record.get('action')})")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def report_html(typed: DecisionRecord) -> str:
    # the JSON as written, redacted: the endpoint, config and notes may hold URIs with credentials
    record = redact(typed.to_dict())
    verdict_css = "verdict-pass" if record.get("outcome") == "PASS" else "verdict-fail"
    summary = [
        ("outcome", f"{record.get('outcome')} — {record.get('action')}"),
        ("model", f"{record.get('model_uri')} (sha256:{record.get('model_digest')})"),
        ("stable before", str((record.get("stable_before") or {}).get("model_uri"))),
        ("engine", str(record.get("engine"))),
        ("endpoint", str(record.get("endpoint"))),
        ("champion", json.dumps(record.get("champion"))),
    ]
    parts = [f"<h2 class='{verdict_css}'>{html.escape(_verdict(record))}</h2>",
             key_value_table(summary)]
    if _timeline_points(record):
        png = base64.b64encode(timeline_png(typed)).decode()
        parts.append(f"<img alt='timeline' src='data:image/png;base64,{png}'/>")
    for step in record.get("steps", []):
        checks = [[c["name"], c["status"], c["detail"]] for c in step["checks"]]
        parts.append(
            f"<h3>canary {html.escape(str(step['canary_percent']))}%: "
            f"{html.escape(str(step['outcome']))}</h3>"
            f"<p>{html.escape('; '.join(step['reasons']))}</p>"
            + table(["check", "status", "detail"], checks,
                    ["fail" if c["status"] == "FAIL" else "" for c in step["checks"]]))
    for note in record.get("notes", []):
        parts.append(f"<p>{html.escape(note)}</p>")
    return "".join(parts)


def overview_facts(typed: DecisionRecord) -> StageFacts:
    """The run overview's view: verdict, endpoint, the canary timeline and its steps."""
    record = redact(typed.to_dict())
    points = _timeline_points(record)
    champion = record.get("champion") or {}
    facts = [("model", f"{record.get('model_uri')} ({short_digest(record.get('model_digest'))})"),
             ("engine", str(record.get("engine"))), ("endpoint", str(record.get("endpoint"))),
             ("champion", f"{champion.get('before')} -> {champion.get('after')}")]
    if points:
        facts.append(("bake time", format_duration(float(points[-1]["t_seconds"]))))
    chart = LineChart("canary traffic", "seconds since rollout start", "canary %", [
        Series("canary %", [(float(p["t_seconds"]), float(p["canary_percent"])) for p in points])
    ], step=True)
    steps = [[f"{step['canary_percent']}%", str(step["outcome"]), "; ".join(step["reasons"])]
             for step in record.get("steps", [])]
    return StageFacts(headline=_verdict(record), facts=facts, chart=chart,
                      table=(["canary step", "outcome", "why"], steps) if steps else None)


def report_page(record: DecisionRecord) -> str:
    """The report as a standalone page (the copy logged to MLflow with the decision record)."""
    return page(f"Canary deployment: {redact(record.deployment)}", report_html(record))


def _verdict(record: dict[str, Any]) -> str:
    return f"{record.get('deployment')}: {record.get('outcome')} ({record.get('action')})"


def _timeline_points(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Timeline samples (entries without a time, e.g. load-generator totals, are not points)."""
    return [p for p in record.get("timeline") or [] if isinstance(p, dict) and "t_seconds" in p]
