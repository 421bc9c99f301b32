"""The Great Expectations suite every split must pass before anything trains on it, run chunk
by chunk so a split never has to fit in memory.

Each split's rules come in two kinds:

- row rules (type, null, blank, PII, token budget, train leakage): one GX suite validated on
  each chunk's DataFrame through the batch API, the chunk indexed by row number in the file.
  GX plans one metric graph per chunk for all of them. Their unexpected counts are summed over
  the chunks and the example rows are the first rows found, so they are exact.
- split rules (row count, column present, unique prompt, unique id): a chunk cannot decide
  them, so they are computed here over the whole split with the semantics of the GX
  expectation they replace (a value repeated anywhere marks every row holding it; nulls are
  never duplicates). Uniqueness keeps a 128-bit digest and the row number per value (24 bytes
  a row) and sorts them once at the end.

Checks that GX cannot express on the raw columns (token length, train/eval leakage) become
derived columns of each chunk, checked by plain GX expectations, so every rule lands in the
same report with the same row evidence. Leakage asks whether a prompt's digest is among the
train split's prompt digests, collected while train was validated.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

from data.config import DataConfig
from data.report import (
    MAX_EXAMPLE_ROWS,
    ExpectationResult,
    ValidationReport,
)
from data.validation_columns import with_columns, with_derived_columns
from data.validation_digests import Duplicates, prompt_membership
from data.validation_rules import (
    BLANK_REGEX,
    CHAT_RULE_COLUMNS,
    CONVERSATION_COLUMN,
    CONVERSATION_PROMPT_COLUMN,
    EMAIL_REGEX,
    ID_FIELD,
    IN_TRAIN_COLUMN,
    NUM_TOKENS_COLUMN,
    PHONE_REGEX,
    SPLIT_RULE_CLASSES,
    Check,
    build_checks,
    has_leakage_source,
    input_fields,
    leakage_column,
    unique_columns,
)

# The public API, wherever each part now lives: the rules and their columns in
# validation_rules.py, the derived columns in validation_columns.py, split-wide duplicates and
# leakage in validation_digests.py; this module runs GX over the chunks and shapes the results.
__all__ = [
    "BLANK_REGEX", "CHAT_RULE_COLUMNS", "CONVERSATION_COLUMN", "CONVERSATION_PROMPT_COLUMN",
    "EMAIL_REGEX", "ID_FIELD", "IN_TRAIN_COLUMN", "NUM_TOKENS_COLUMN", "PHONE_REGEX",
    "SPLIT_RULE_CLASSES", "SplitValidation", "Validation", "build_checks", "has_leakage_source",
    "input_fields", "leakage_column", "prompt_membership", "unique_columns", "with_columns",
]


class Validation:
    """One ephemeral GX context for all splits; `split(...)` validates one split."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: DataConfig):
        self.gx = _import_gx()
        context = self.gx.get_context(mode="ephemeral")
        context.variables.progress_bars = _no_progress_bars()
        self.source = context.data_sources.add_pandas("shipyard_splits")
        self.tokenizer, self.config = tokenizer, config

    def split(self, split: str, train_prompts: np.ndarray | None) -> SplitValidation:
        """`train_prompts`: sorted prompt digests of the train split (None for train itself,
        or when train has no prompt column: then there is no leakage rule)."""
        return SplitValidation(self, split, train_prompts)

    def report(self, results: list[ExpectationResult], split_rows: dict[str, int],
               longest: dict[str, int], inputs: dict[str, dict[str, str]] | None = None
               ) -> ValidationReport:
        return ValidationReport(
            results=results,
            split_rows=split_rows,
            longest_example_tokens=longest,
            inputs=inputs or {},
            config=asdict(self.config),
            great_expectations_version=self.gx.__version__,
        )


@dataclass
class _RowRuleTotal:
    """A row rule's outcome summed over the chunks seen so far."""

    success: bool = True
    unexpected_count: int = 0
    # GX decides "values are strings" from the column's dtype when it is not object: then it
    # reports the dtype (observed) instead of counting rows; the first one seen is kept.
    observed: int | str | None = None
    rows: list[int] = field(default_factory=list)
    error: str | None = None


class SplitValidation:
    """Feed a split's chunks in file order to `add_chunk`, then call `finish`."""

    def __init__(self, validation: Validation, split: str, train_prompts: np.ndarray | None):
        self.validation, self.split = validation, split
        self.train_prompts = train_prompts
        config = validation.config
        self.fields = (*input_fields(config), ID_FIELD)
        # Every rule a chunk could need; `finish` keeps those the split's columns call for.
        self.row_checks = [c for c in build_checks(split, self.fields, config,
                                                   check_leakage=train_prompts is not None)
                           if c.gx_class not in SPLIT_RULE_CLASSES]
        self.suite = _suite(validation.gx, split, self.row_checks)
        self.batches = validation.source.add_dataframe_asset(split) \
            .add_batch_definition_whole_dataframe(f"{split}_chunk")
        self.totals = {check.key: _RowRuleTotal() for check in self.row_checks}
        self.uniques = {column: Duplicates()
                        for column in (*unique_columns(config), leakage_column(config))}
        self.longest: int | None = None

    def add_chunk(self, chunk: pd.DataFrame) -> None:
        """`chunk`: consecutive rows indexed by row number in the file."""
        chunk = with_columns(chunk, self.fields)
        frame = with_derived_columns(chunk, self.validation.tokenizer, self.validation.config,
                                      self.train_prompts)
        validation = self.batches.get_batch(batch_parameters={"dataframe": frame}) \
            .validate(self.suite, result_format="COMPLETE")
        for gx_result in validation.results:
            check = self.row_checks[gx_result.expectation_config.meta["order"]]
            _add_to_total(self.totals[check.key], gx_result)
        for column, duplicates in self.uniques.items():
            duplicates.add(frame[column])
        tokens = frame.get(NUM_TOKENS_COLUMN)
        if tokens is not None and tokens.notna().any():
            self.longest = max(self.longest or 0, int(tokens.max()))

    def finish(self, columns: Sequence[str], num_rows: int) -> list[ExpectationResult]:
        """The split's results in suite order; `columns`: every column the split has."""
        checks = build_checks(self.split, columns, self.validation.config,
                              check_leakage=self.train_prompts is not None)
        return [self._split_result(check, columns, num_rows) for check in checks]

    def prompt_digests(self) -> np.ndarray:
        """Sorted unique digests of the split's string prompts (the train leakage set)."""
        return self.uniques[leakage_column(self.validation.config)].unique_string_digests()

    def _split_result(self, check: Check, columns: Sequence[str], num_rows: int
                      ) -> ExpectationResult:
        if check.gx_class == "ExpectTableRowCountToBeBetween":
            minimum = check.kwargs["min_value"]
            return _result(self.split, check, success=num_rows >= minimum,
                           unexpected_count=None, rows=[], observed=num_rows)
        if check.gx_class == "ExpectColumnToExist":
            return _result(self.split, check, success=check.kwargs["column"] in columns,
                           unexpected_count=None, rows=[], observed=None)
        if check.gx_class == "ExpectColumnValuesToBeUnique":
            count, rows = self.uniques[check.kwargs["column"]].result()
            return _result(self.split, check, success=count == 0, unexpected_count=count,
                           rows=rows, observed=None)
        total = self.totals[check.key]
        if total.error is not None:
            return _result(self.split, check, success=False, unexpected_count=None, rows=[],
                           observed=f"Great Expectations error: {total.error}")
        by_dtype = total.observed is not None
        return _result(self.split, check, success=total.success,
                       unexpected_count=None if by_dtype else total.unexpected_count,
                       rows=[] if by_dtype else total.rows, observed=total.observed)


def _add_to_total(total: _RowRuleTotal, gx_result: Any) -> None:
    if gx_result.exception_info and gx_result.exception_info.get("raised_exception"):
        # A GX internal error must not read as a pass; the rule is reported as failed.
        total.error = total.error or str(gx_result.exception_info.get("exception_message"))
        return
    failed_first_here = total.success and not gx_result.success
    total.success = total.success and bool(gx_result.success)
    details = gx_result.result or {}
    count = details.get("unexpected_count")
    if count is None:
        observed = details.get("observed_value")
        if isinstance(observed, int | str) and (total.observed is None or failed_first_here):
            total.observed = observed
        return
    total.unexpected_count += int(count)
    room = MAX_EXAMPLE_ROWS - len(total.rows)
    if room > 0:  # chunks arrive in row order: the first rows found are the smallest
        total.rows += sorted(int(i) for i in details.get("unexpected_index_list") or [])[:room]


def _suite(gx: Any, split: str, checks: list[Check]) -> Any:
    suite = gx.ExpectationSuite(name=f"shipyard_{split}")
    for order, check in enumerate(checks):
        expectation_class = getattr(gx.expectations, check.gx_class)
        suite.add_expectation(
            expectation_class(**check.kwargs, severity=check.severity, meta={"order": order})
        )
    return suite


def _import_gx() -> Any:
    # Importing GX with analytics on phones home; the switch is read at import time.
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx

    return gx


def _no_progress_bars() -> Any:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    return ProgressBarsConfig(globally=False, metric_calculations=False)


def _result(
    split: str, check: Check, *, success: bool, unexpected_count: int | None,
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
