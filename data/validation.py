"""The Great Expectations suite every split must pass before anything trains on it.

One suite and one `batch.validate` call per split: GX then plans a single metric graph for
all of a split's expectations and computes shared metrics (null counts, row count) once.
Checks that GX cannot express on the raw columns (token length, train/eval leakage) become
derived columns of the batch, checked by plain GX expectations, so every rule lands in the
same report with the same row evidence.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from transformers import PreTrainedTokenizerBase

from data.config import SPLITS, DataConfig
from data.report import (
    MAX_EXAMPLE_ROWS,
    SEVERITY_ERROR,
    SEVERITY_WARNING,
    ExpectationResult,
    ValidationReport,
)
from data.tokenizer import count_example_tokens

ID_FIELD = "id"
NUM_TOKENS_COLUMN = "_num_tokens"  # derived: tokens of the formatted example
IN_TRAIN_COLUMN = "_prompt_in_train"  # derived: this prompt also appears in the train split

# Not exhaustive PII detection: the common shapes that slip into scraped instruction data.
EMAIL_REGEX = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
# International numbers need a leading "+"; national ones need separators (555-123-4567,
# (555) 123 4567). Bare digit runs are left alone: arithmetic data is full of them.
PHONE_REGEX = (
    r"(?<![\w+])(?:\+\d{1,3}(?:[\s.-]?\d){6,12}"
    r"|(?:\(\d{2,4}\)\s?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{4})(?!\w)"
)
BLANK_REGEX = r"^\s*$"


@dataclass(frozen=True)
class _Check:
    """One expectation plus the words the report needs when it fails."""

    gx_class: str  # name in great_expectations.expectations
    kwargs: dict[str, Any]
    rule: str
    description: str
    fix: str
    column: str | None = None  # the user's column, when it differs from the GX column
    severity: str = SEVERITY_ERROR


def run_validation(
    frames: dict[str, pd.DataFrame],
    tokenizer: PreTrainedTokenizerBase,
    config: DataConfig,
    inputs: dict[str, dict[str, str]] | None = None,
) -> ValidationReport:
    """Validate every split; never raises for bad data (the caller decides from the report)."""
    gx = _import_gx()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = _no_progress_bars()
    source = context.data_sources.add_pandas("shipyard_splits")
    train_prompts = _string_values(frames["train"], config.prompt_field)
    results: list[ExpectationResult] = []
    longest: dict[str, int] = {}
    for split in SPLITS:
        batch_frame = _with_derived_columns(frames[split], split, tokenizer, config, train_prompts)
        checks = build_checks(split, list(frames[split].columns), config,
                              check_leakage=split != "train" and train_prompts is not None)
        results += _validate_split(gx, source, split, batch_frame, checks)
        if NUM_TOKENS_COLUMN in batch_frame and batch_frame[NUM_TOKENS_COLUMN].notna().any():
            longest[split] = int(batch_frame[NUM_TOKENS_COLUMN].max())
    return ValidationReport(
        results=results,
        split_rows={split: len(frames[split]) for split in SPLITS},
        longest_example_tokens=longest,
        inputs=inputs or {},
        config=asdict(config),
        great_expectations_version=gx.__version__,
    )


def _import_gx() -> Any:
    # Importing GX with analytics on phones home; the switch is read at import time.
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx

    return gx


def _no_progress_bars() -> Any:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    return ProgressBarsConfig(globally=False, metric_calculations=False)


def _string_values(frame: pd.DataFrame, column: str) -> set[str] | None:
    if column not in frame.columns:
        return None
    return {v for v in frame[column] if isinstance(v, str)}


def _with_derived_columns(
    frame: pd.DataFrame,
    split: str,
    tokenizer: PreTrainedTokenizerBase,
    config: DataConfig,
    train_prompts: set[str] | None,
) -> pd.DataFrame:
    prompt, response = config.prompt_field, config.response_field
    out = frame.copy()
    if prompt in out.columns and response in out.columns:
        # Only rows whose both fields are strings can be formatted; the others are reported by
        # the type/null rules, and NaN here keeps them out of the token-length rule.
        usable = out[prompt].map(_is_str) & out[response].map(_is_str)
        counts = count_example_tokens(
            tokenizer, list(out.loc[usable, prompt]), list(out.loc[usable, response])
        )
        out[NUM_TOKENS_COLUMN] = pd.Series(counts, index=out.index[usable], dtype="float64")
    if split != "train" and prompt in out.columns and train_prompts is not None:
        out[IN_TRAIN_COLUMN] = out[prompt].map(lambda v: isinstance(v, str) and v in train_prompts)
    return out


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def build_checks(
    split: str, columns: Sequence[str], config: DataConfig, *, check_leakage: bool
) -> list[_Check]:
    """The rules for one split. Rules on a missing column are left out: GX would only raise."""
    prompt, response = config.prompt_field, config.response_field
    checks = [_min_rows_check(config)]
    for column, field in ((prompt, "prompt_field"), (response, "response_field")):
        checks.append(_column_present_check(column, field, columns))
        if column in columns:
            checks += _text_column_checks(column, config)
    if prompt in columns:
        checks.append(_Check(
            "ExpectColumnValuesToBeUnique", {"column": prompt}, "unique_prompt",
            "each instruction appears once in the split",
            "remove the duplicate rows or rewrite them into distinct instructions",
        ))
    if prompt in columns and response in columns:
        checks.append(_max_tokens_check(config))
    if check_leakage and prompt in columns:
        checks.append(_Check(
            "ExpectColumnValuesToBeInSet", {"column": IN_TRAIN_COLUMN, "value_set": [False]},
            "no_train_leakage", f"no instruction of the {split} split also appears in train",
            f"drop those rows from {split} (or from train): a held-out split that repeats "
            "training instructions overstates the model's quality",
            column=prompt,
        ))
    if ID_FIELD in columns:
        checks += _id_checks()
    return checks


def _min_rows_check(config: DataConfig) -> _Check:
    return _Check(
        "ExpectTableRowCountToBeBetween", {"min_value": config.min_rows_per_split},
        "min_rows", f"at least {config.min_rows_per_split} rows (data.min_rows_per_split)",
        "add rows to the split, or lower data.min_rows_per_split",
    )


def _column_present_check(column: str, field: str, columns: Sequence[str]) -> _Check:
    return _Check(
        "ExpectColumnToExist", {"column": column}, "column_present",
        f"column {column!r} (data.{field}) is present",
        f"add the column, or set data.{field} to one of the columns found: {list(columns)}",
    )


def _text_column_checks(column: str, config: DataConfig) -> list[_Check]:
    pii_severity = SEVERITY_ERROR if config.pii_action == "fail" else SEVERITY_WARNING
    pii_fix = (
        "remove or mask the personal data (e.g. as <EMAIL>, <PHONE>), or set "
        "data.pii_action='warn' if it is synthetic"
    )
    return [
        _Check("ExpectColumnValuesToBeOfType", {"column": column, "type_": "str"},
               "string_typed", "values are strings", "store the values as JSON strings"),
        _Check("ExpectColumnValuesToNotBeNull", {"column": column}, "not_null",
               "no missing (null) values", "fill in or drop the rows with a missing value"),
        _Check("ExpectColumnValuesToNotMatchRegex", {"column": column, "regex": BLANK_REGEX},
               "not_blank", "no empty or whitespace-only text",
               "fill in or drop the rows with empty text"),
        _Check("ExpectColumnValuesToNotMatchRegex", {"column": column, "regex": EMAIL_REGEX},
               "no_email", "no email addresses (PII)", pii_fix, severity=pii_severity),
        _Check("ExpectColumnValuesToNotMatchRegex", {"column": column, "regex": PHONE_REGEX},
               "no_phone", "no phone numbers (PII)", pii_fix, severity=pii_severity),
    ]


def _max_tokens_check(config: DataConfig) -> _Check:
    both = f"{config.prompt_field}+{config.response_field}"
    return _Check(
        "ExpectColumnValuesToBeBetween",
        {"column": NUM_TOKENS_COLUMN, "max_value": config.max_example_tokens},
        "max_tokens",
        f"formatted example (template + {both} + EOS) has at most "
        f"{config.max_example_tokens} tokens (data.max_example_tokens)",
        "shorten or drop those rows, or raise data.max_example_tokens (and the model's context)",
        column=both,
    )


def _id_checks() -> list[_Check]:
    fix = f"give every row a distinct {ID_FIELD!r}, or drop the column to get generated ids"
    return [
        _Check("ExpectColumnValuesToNotBeNull", {"column": ID_FIELD}, "id_not_null",
               "every row has an id", fix),
        _Check("ExpectColumnValuesToBeUnique", {"column": ID_FIELD}, "unique_id",
               "ids are unique within the split", fix),
    ]


def _validate_split(
    gx: Any, source: Any, split: str, frame: pd.DataFrame, checks: list[_Check]
) -> list[ExpectationResult]:
    suite = gx.ExpectationSuite(name=f"shipyard_{split}")
    for order, check in enumerate(checks):
        expectation_class = getattr(gx.expectations, check.gx_class)
        suite.add_expectation(
            expectation_class(**check.kwargs, severity=check.severity, meta={"order": order})
        )
    batch = (
        source.add_dataframe_asset(split)
        .add_batch_definition_whole_dataframe(f"{split}_all_rows")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    validation = batch.validate(suite, result_format="COMPLETE")
    # GX returns results grouped by metric, not in suite order: restore the order we wrote.
    by_order = sorted(validation.results, key=lambda r: r.expectation_config.meta["order"])
    return [_to_result(split, checks[r.expectation_config.meta["order"]], r) for r in by_order]


def _to_result(split: str, check: _Check, gx_result: Any) -> ExpectationResult:
    if gx_result.exception_info and gx_result.exception_info.get("raised_exception"):
        # A GX internal error must not read as a pass; surface it as a failed rule.
        message = gx_result.exception_info.get("exception_message")
        return _result(split, check, success=False, unexpected_count=None, rows=[],
                       observed=f"Great Expectations error: {message}")
    details = gx_result.result or {}
    count = details.get("unexpected_count")
    rows = sorted(int(i) for i in details.get("unexpected_index_list") or [])[:MAX_EXAMPLE_ROWS]
    observed = details.get("observed_value") if count is None else None
    return _result(split, check, success=bool(gx_result.success),
                   unexpected_count=None if count is None else int(count), rows=rows,
                   observed=observed if isinstance(observed, int | str) else None)


def _result(
    split: str, check: _Check, *, success: bool, unexpected_count: int | None,
    rows: list[int], observed: int | str | None,
) -> ExpectationResult:
    return ExpectationResult(
        split=split,
        expectation=_snake_case(check.gx_class),
        rule=check.rule,
        description=check.description,
        fix=check.fix,
        column=check.column or check.kwargs.get("column"),
        success=success,
        unexpected_count=unexpected_count,
        example_rows=rows,
        observed_value=observed,
        severity=check.severity,
    )


def _snake_case(class_name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in class_name).lstrip("_")
