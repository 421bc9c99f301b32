"""The run overview: ``reports/<run>/index.html``, one page for the whole pipeline run.

Each stage, when it publishes its report, also writes ``<stage>.summary.json`` beside it
(status, start and finish times, headline, key numbers, an optional chart and table); the
overview is rebuilt from every summary in the directory. It works across processes (train's
torch-elastic workers write their own summary) and shows a stage that failed, with its error.
No Flyte imports: the page can be rebuilt from a report directory alone
(`python -m tasks.overview <run dir>`).
"""

from __future__ import annotations

import html
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from common.fs import SHARED_FILE_MODE, atomic_write_text
from common.html import (
    LineChart,
    StageFacts,
    format_duration,
    key_value_table,
    page,
    status_badge,
    table,
)

SCHEMA_VERSION = 1
SUMMARY_SUFFIX = ".summary.json"
OVERVIEW_NAME = "index.html"

# The pipeline's stages in run order, with the title each report carries.
PIPELINE_STAGES: tuple[tuple[str, str], ...] = (
    ("validate_data", "Data validation"),
    ("train", "Training"),
    ("evaluate", "Evaluation"),
    ("register", "Model registration"),
    ("deploy_canary", "Canary deployment"),
)

Status = Literal["succeeded", "failed"]


@dataclass(frozen=True)
class StageSummary:
    stage: str
    title: str
    status: Status
    # ISO 8601 UTC; `started_at` is None when the task did not say when it started.
    started_at: str | None
    finished_at: str
    report: str  # file name of the stage's HTML report, beside the summary
    facts: StageFacts = field(default_factory=StageFacts)
    error: str | None = None  # the error's message when the stage failed

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        delta = datetime.fromisoformat(self.finished_at) - datetime.fromisoformat(self.started_at)
        return max(delta.total_seconds(), 0.0)

    def to_dict(self) -> dict[str, Any]:
        facts = self.facts
        return {
            "schema_version": SCHEMA_VERSION, "stage": self.stage, "title": self.title,
            "status": self.status, "started_at": self.started_at,
            "finished_at": self.finished_at, "duration_seconds": self.duration_seconds,
            "report": self.report, "error": self.error, "headline": facts.headline,
            "facts": [list(f) for f in facts.facts],
            "chart": None if facts.chart is None else facts.chart.to_dict(),
            "table": None if facts.table is None else {"headers": facts.table[0],
                                                       "rows": facts.table[1]},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageSummary:
        tab = data.get("table")
        chart = data.get("chart")
        return cls(
            stage=str(data["stage"]), title=str(data.get("title") or data["stage"]),
            status="failed" if data.get("status") == "failed" else "succeeded",
            started_at=data.get("started_at"), finished_at=str(data["finished_at"]),
            report=str(data.get("report") or f"{data['stage']}.html"), error=data.get("error"),
            facts=StageFacts(
                headline=str(data.get("headline") or ""),
                facts=[(str(k), str(v)) for k, v in data.get("facts") or []],
                chart=LineChart.from_dict(chart) if chart else None,
                table=(list(tab["headers"]), [list(r) for r in tab["rows"]]) if tab else None,
            ),
        )


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def iso_utc(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="seconds")


def summary_path(run_dir: Path, stage: str) -> Path:
    return run_dir / f"{stage}{SUMMARY_SUFFIX}"


def load_summaries(run_dir: Path) -> dict[str, StageSummary]:
    """Every readable summary in `run_dir`, by stage; an unreadable one is skipped (the
    overview must never be what breaks a stage)."""
    out: dict[str, StageSummary] = {}
    for path in sorted(run_dir.glob(f"*{SUMMARY_SUFFIX}")):
        try:
            summary = StageSummary.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        out[summary.stage] = summary
    return out


def render_overview(run_id: str, summaries: dict[str, StageSummary]) -> str:
    """The overview page: a status table of every stage, then one section per stage."""
    known = [stage for stage, _ in PIPELINE_STAGES]
    titles = dict(PIPELINE_STAGES)
    stages = known + sorted(s for s in summaries if s not in known)
    rows, sections = [], []
    for stage in stages:
        summary = summaries.get(stage)
        title = summary.title if summary else titles.get(stage, stage)
        if summary is None:
            rows.append(_row_missing(stage, title))
            continue
        rows.append(_row(summary))
        sections.append(_section(summary))
    failed = [s for s in summaries.values() if s.status == "failed"]
    verdict = (f"{len(failed)} stage(s) failed: {', '.join(s.stage for s in failed)}" if failed
               else f"{len(summaries)} of {len(known)} stages reported, none failed")
    body = (
        f"<p class='subtitle'>{html.escape(verdict)}. Stages without a report in this run were "
        "not reached, or were a cache hit (validate_data, train and evaluate are cached).</p>"
        "<table><tr><th>stage</th><th>status</th><th>started (UTC)</th><th>duration</th>"
        f"<th>key numbers</th><th>report</th></tr>{''.join(rows)}</table>"
        + "".join(sections)
    )
    return page(f"Pipeline run {run_id}", body)


def _row(summary: StageSummary) -> str:
    duration = summary.duration_seconds
    started = (summary.started_at or "–").replace("T", " ").removesuffix("+00:00")
    return (f"<tr><td><a href='#{_anchor(summary.stage)}'>{html.escape(summary.title)}</a></td>"
            f"<td>{status_badge(summary.status)}</td><td>{html.escape(started)}</td>"
            f"<td class='num'>{'–' if duration is None else format_duration(duration)}</td>"
            f"<td>{html.escape(_headline(summary))}</td>"
            f"<td><a href='{html.escape(summary.report, quote=True)}'>"
            f"{html.escape(summary.report)}</a></td></tr>")


def _headline(summary: StageSummary) -> str:
    if summary.facts.headline or not summary.error:
        return summary.facts.headline
    first_line = summary.error.splitlines()[0] if summary.error.strip() else summary.error
    return first_line if len(first_line) <= 120 else first_line[:119] + "…"


def _row_missing(stage: str, title: str) -> str:
    return (f"<tr><td>{html.escape(title)}</td><td>{status_badge('missing')}</td><td>–</td>"
            "<td class='num'>–</td><td class='muted'>no report in this run</td><td>–</td></tr>")


def _section(summary: StageSummary) -> str:
    facts = summary.facts
    parts = [f"<section class='stage' id='{_anchor(summary.stage)}'>"
             f"<h2>{html.escape(summary.title)} {status_badge(summary.status)}</h2>"]
    if facts.headline:
        parts.append(f"<p>{html.escape(facts.headline)}</p>")
    if summary.error:
        parts.append(f"<pre>{html.escape(summary.error)}</pre>")
    if facts.facts:
        parts.append(key_value_table(facts.facts))
    if facts.chart is not None:
        parts.append(facts.chart.to_svg())
    if facts.table is not None and facts.table[1]:
        parts.append(table(facts.table[0], facts.table[1]))
    parts.append(f"<p><a href='{html.escape(summary.report, quote=True)}'>full report: "
                 f"{html.escape(summary.report)}</a></p></section>")
    return "".join(parts)


def _anchor(stage: str) -> str:
    return "stage-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in stage)


def write_overview(run_dir: Path, run_id: str | None = None) -> Path:
    """(Re)build ``<run_dir>/index.html`` from the summaries there (temp file + rename)."""
    path = run_dir / OVERVIEW_NAME
    atomic_write_text(path, render_overview(run_id or run_dir.name, load_summaries(run_dir)),
                      mode=SHARED_FILE_MODE)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not Path(args[0]).is_dir():
        print("usage: python -m tasks.overview REPORTS_DIR/RUN_ID", file=sys.stderr)
        return 2
    print(write_overview(Path(args[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
