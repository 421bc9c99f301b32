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

from common.html import StageFacts, format_count, format_value, key_value_table, table

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


_HTML_COLUMNS = ("split", "rule", "column", "result", "severity", "unexpected", "example rows",
                 "observed", "expectation", "fix")


def render_html(report: ValidationReport) -> str:
    """The report body (styled by common.html's stylesheet); every value is escaped (data can
    contain markup)."""
    verdict = "PASSED" if report.passed else f"FAILED ({len(report.failures)} blocking)"
    css = "verdict-pass" if report.passed else "verdict-fail"
    facts = overview_facts(report)
    rows = [_html_cells(r) for r in report.results]
    classes = [_row_class(r) for r in report.results]
    return (f"<h2 class='{css}'>{html.escape(verdict)}</h2>"
            f"<p>{html.escape(facts.headline)}</p>"
            + key_value_table(facts.facts)
            + "<h3>Expectations</h3>" + table(_HTML_COLUMNS, rows, classes))


def overview_facts(report: ValidationReport) -> StageFacts:
    """The headline and key numbers of the run overview: rows validated, rules, failures."""
    total_rows = sum(report.split_rows.values())
    verdict = "passed" if report.passed else f"{len(report.failures)} blocking failure(s)"
    headline = (f"{format_count(total_rows, 'rows')} validated in {len(report.split_rows)} "
                f"split(s): {verdict} ({len(report.results)} checks, "
                f"{len(report.warnings)} warning(s))")
    facts = [(f"rows ({split})", format_count(rows)) for split, rows in report.split_rows.items()]
    facts += [(f"longest example ({split})", format_count(tokens, "tokens"))
              for split, tokens in report.longest_example_tokens.items()]
    if report.great_expectations_version:
        facts.append(("Great Expectations", report.great_expectations_version))
    broken = [r for r in report.results if not r.success]
    rule_table = None
    if broken:
        rule_table = (["split", "rule", "severity", "rows breaking it", "fix"],
                      [[r.split, r.rule, r.severity, format_value(r.unexpected_count), r.fix]
                       for r in broken])
    return StageFacts(headline=headline, facts=facts, table=rule_table)


def _row_class(result: ExpectationResult) -> str:
    return "" if result.success else "fail" if result.blocking else "warn"


def _html_cells(result: ExpectationResult) -> list[object]:
    verdict = {"": "pass", "fail": "FAIL", "warn": "warn"}[_row_class(result)]
    return [
        result.split, f"{result.rule}: {result.description}", result.column or "", verdict,
        result.severity, result.unexpected_count,
        ", ".join(str(r) for r in result.example_rows),
        "" if result.observed_value is None else str(result.observed_value),
        result.expectation, "" if result.success else result.fix,
    ]
