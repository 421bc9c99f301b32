"""The PII patterns and the report format, without running Great Expectations."""

from __future__ import annotations

import json
import re

import pytest

from data.report import ExpectationResult, ValidationReport, failure_message
from data.validation import EMAIL_REGEX, PHONE_REGEX

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text", [
    "Mail jane.doe@example.org today", "ops+alerts@mail.co.uk", "X@Y.IO",
])
def test_email_pattern_finds_addresses(text: str) -> None:
    assert re.search(EMAIL_REGEX, text)


@pytest.mark.parametrize("text", [
    "Call 555-123-4567", "(555) 123-4567", "555.123.4567", "+1 415 555 0100",
    "+44 20 7946 0958", "+4930123456",
])
def test_phone_pattern_finds_numbers(text: str) -> None:
    assert re.search(PHONE_REGEX, text)


@pytest.mark.parametrize("text", [
    # Arithmetic, dates, versions and big numbers must not read as phone numbers: the shipped
    # corpus is full of digits and a false positive would block the pipeline.
    "What is 57 - 12?", "What is 99 + 100?", "What is 30 * 30?", "2024-01-15",
    "version 1.2.3", "10.000.000", "1234567890", "What is 555 - 1234?",
])
def test_phone_pattern_ignores_ordinary_numbers(text: str) -> None:
    assert not re.search(PHONE_REGEX, text)


def _result(**changes: object) -> ExpectationResult:
    fields: dict = dict(
        split="eval", expectation="expect_column_values_to_not_be_null", rule="not_null",
        description="no missing (null) values", fix="fill them in", column="response",
        success=False, unexpected_count=7, example_rows=[0, 2, 4, 6, 8], observed_value=None,
        severity="critical",
    )
    return ExpectationResult(**{**fields, **changes})


def test_failure_message_names_file_column_count_rows_and_fix() -> None:
    report = ValidationReport(results=[_result()], split_rows={"eval": 9})
    message = failure_message(report, {"eval": "data/eval.jsonl"})
    assert "split 'eval' (data/eval.jsonl), column 'response'" in message
    assert "7 row(s) break it, e.g. rows [0, 2, 4, 6, 8, ...]" in message
    assert "Fix: fill them in" in message


def test_warnings_do_not_fail_the_report() -> None:
    report = ValidationReport(results=[_result(severity="warning")], split_rows={"eval": 9})
    assert report.passed and len(report.warnings) == 1 and not report.failures


def test_html_report_escapes_every_value() -> None:
    hostile = "<script>alert(1)</script>"
    report = ValidationReport(results=[_result(column=hostile, fix=hostile)],
                              split_rows={"eval": 9})
    rendered = report.to_html()
    assert "<script>" not in rendered
    assert "&lt;script&gt;" in rendered


def test_json_report_is_stable_and_complete() -> None:
    report = ValidationReport(results=[_result()], split_rows={"eval": 9})
    assert report.to_json() == report.to_json()
    [entry] = json.loads(report.to_json())["results"]
    assert {"split", "expectation", "column", "success", "unexpected_count", "example_rows",
            "severity"} <= set(entry)
