"""The data validation report: one entry per expectation per split, as JSON and as HTML.

The JSON is deterministic (no timestamps, no run ids): the same data and config give the same
bytes, so its digest identifies the validation outcome.
"""

from __future__ import annotations

import dataclasses
import html
import json
from dataclasses import dataclass, field
from typing import Any

SEVERITY_ERROR = "critical"  # a failure stops the pipeline (GX's FailureSeverity.CRITICAL)
SEVERITY_WARNING = "warning"  # a failure is reported and the pipeline goes on
MAX_EXAMPLE_ROWS = 5


@dataclass(frozen=True)
class ExpectationResult:
    split: str
    # Great Expectations expectation type, e.g. "expect_column_values_to_be_unique".
    expectation: str
    # Stable short name of the rule (see validation.RULES), e.g. "unique_prompt".
    rule: str
    # What the rule requires, in words, with the configured limits filled in.
    description: str
    # How to fix the data when the rule is broken.
    fix: str
    # The user's column the rule is about (None for table-level rules such as row count).
    column: str | None
    success: bool
    # Rows that break the rule (None for table-level rules).
    unexpected_count: int | None
    # Up to MAX_EXAMPLE_ROWS 0-based row numbers of offending rows (row n = n-th record).
    example_rows: list[int]
    # Table-level observation, e.g. the row count.
    observed_value: int | str | None
    severity: str

    @property
    def blocking(self) -> bool:
        return not self.success and self.severity == SEVERITY_ERROR


@dataclass(frozen=True)
class ValidationReport:
    results: list[ExpectationResult]
    split_rows: dict[str, int]
    # Tokens of the longest formatted example per split (pick the training context from it).
    longest_example_tokens: dict[str, int] = field(default_factory=dict)
    # Where each split came from: {"train": {"location": ..., "sha256": ...}, ...}
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)
    # The DataConfig the rules were checked against, as a plain dict.
    config: dict[str, Any] = field(default_factory=dict)
    great_expectations_version: str = ""

    @property
    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.results if r.blocking]

    @property
    def warnings(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success and r.severity == SEVERITY_WARNING]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def to_html(self) -> str:
        return render_html(self)


def describe_result(result: ExpectationResult, location: str | None = None) -> str:
    """One line naming the split (and its file), the column, the rule, counts, rows and fix."""
    where = f"split {result.split!r}" + (f" ({location})" if location else "")
    column = f", column {result.column!r}" if result.column else ""
    if result.unexpected_count is not None:
        rows = ", ".join(str(r) for r in result.example_rows)
        more = ", ..." if result.unexpected_count > len(result.example_rows) else ""
        evidence = f"{result.unexpected_count} row(s) break it, e.g. rows [{rows}{more}] (0-based)"
    elif result.observed_value is not None:
        evidence = f"observed value {result.observed_value!r}"
    else:
        evidence = "failed"
    return f"{where}{column}: rule {result.rule!r} ({result.description}): {evidence}. " \
        f"Fix: {result.fix}"


def failure_message(report: ValidationReport, locations: dict[str, str]) -> str:
    failures = report.failures
    lines = [f"{len(failures)} data expectation(s) failed:"]
    lines += [f"  - {describe_result(r, locations.get(r.split))}" for r in failures]
    return "\n".join(lines)


_HTML_STYLE = (
    "<style>table.gx{border-collapse:collapse;font:13px sans-serif}"
    "table.gx td,table.gx th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
    "tr.fail{background:#fdd}tr.warn{background:#ffe9b3}</style>"
)
_HTML_COLUMNS = ("split", "rule", "column", "result", "severity", "unexpected", "example rows",
                 "observed", "expectation", "fix")


def render_html(report: ValidationReport) -> str:
    """A self-contained HTML table; every value is escaped (data can contain markup)."""
    verdict = "PASSED" if report.passed else f"FAILED ({len(report.failures)} blocking)"
    summary = (
        f"<p><b>{html.escape(verdict)}</b>; {len(report.warnings)} warning(s); rows: "
        + html.escape(", ".join(f"{k}={v}" for k, v in report.split_rows.items()))
        + "; longest example (tokens): "
        + html.escape(", ".join(f"{k}={v}" for k, v in report.longest_example_tokens.items()))
        + "</p>"
    )
    header = "".join(f"<th>{html.escape(c)}</th>" for c in _HTML_COLUMNS)
    body = "".join(_html_row(r) for r in report.results)
    return f"{_HTML_STYLE}{summary}<table class='gx'><tr>{header}</tr>{body}</table>"


def _html_row(result: ExpectationResult) -> str:
    if result.success:
        css, verdict = "pass", "pass"
    else:
        css, verdict = ("fail", "FAIL") if result.blocking else ("warn", "warn")
    cells = (
        result.split, f"{result.rule}: {result.description}", result.column or "", verdict,
        result.severity, "" if result.unexpected_count is None else result.unexpected_count,
        ", ".join(str(r) for r in result.example_rows),
        "" if result.observed_value is None else result.observed_value,
        result.expectation, "" if result.success else result.fix,
    )
    return f"<tr class='{css}'>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) \
        + "</tr>"
