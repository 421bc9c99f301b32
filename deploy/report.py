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


def timeline_png(record: dict[str, Any]) -> bytes:
    points = record.get("timeline") or []
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


def report_html(record: dict[str, Any]) -> str:
    summary = [
        ("outcome", f"{record.get('outcome')} — {record.get('action')}"),
        ("model", f"{record.get('model_uri')} (sha256:{record.get('model_digest')})"),
        ("stable before", str((record.get("stable_before") or {}).get("model_uri"))),
        ("engine", str(record.get("engine"))),
        ("endpoint", str(record.get("endpoint"))),
        ("champion", json.dumps(record.get("champion"))),
    ]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(v)}</code></td></tr>"
                   for k, v in summary)
    parts = [f"<table>{rows}</table>"]
    if record.get("timeline"):
        png = base64.b64encode(timeline_png(record)).decode()
        parts.append(f"<img alt='timeline' src='data:image/png;base64,{png}'/>")
    for step in record.get("steps", []):
        checks = "".join(
            f"<tr><td>{html.escape(c['name'])}</td><td>{c['status']}</td>"
            f"<td>{html.escape(c['detail'])}</td></tr>" for c in step["checks"])
        parts.append(
            f"<h3>canary {step['canary_percent']}%: {step['outcome']}</h3>"
            f"<p>{html.escape('; '.join(step['reasons']))}</p>"
            f"<table><tr><th>check</th><th>status</th><th>detail</th></tr>{checks}</table>")
    for note in record.get("notes", []):
        parts.append(f"<p>{html.escape(note)}</p>")
    return "".join(parts)
