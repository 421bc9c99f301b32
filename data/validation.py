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

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

from data import chat
from data.config import DataConfig
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
# Derived columns of chat rows. Each rule column is True (passes), False (fails) or None (an
# earlier rule already failed the row, or it is null), so a bad row is reported by the first
# rule it breaks, in this order.
CHAT_RULE_COLUMNS = {
    "chat_structure": "_chat_structure_ok",
    "chat_roles": "_chat_roles_ok",
    "chat_turn_order": "_chat_turn_order_ok",
    "chat_assistant_not_blank": "_chat_assistant_ok",
    "chat_template_renders": "_chat_renders_ok",
}
CONVERSATION_COLUMN = "_conversation"  # "role: content" lines: PII and duplicate rules
CONVERSATION_PROMPT_COLUMN = "_conversation_prompt"  # the same but the last turn: leakage

# Not exhaustive PII detection: the common shapes that slip into scraped instruction data.
EMAIL_REGEX = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
# International numbers need a leading "+"; national ones need separators (555-123-4567,
# (555) 123 4567). Bare digit runs are left alone: arithmetic data is full of them.
PHONE_REGEX = (
    r"(?<![\w+])(?:\+\d{1,3}(?:[\s.-]?\d){6,12}"
    r"|(?:\(\d{2,4}\)\s?|\d{2,4}[\s.-])\d{3,4}[\s.-]\d{4})(?!\w)"
)
BLANK_REGEX = r"^\s*$"
# Rules decided over the whole split (see the module docstring), by GX expectation class.
SPLIT_RULE_CLASSES = frozenset({"ExpectTableRowCountToBeBetween", "ExpectColumnToExist",
                                "ExpectColumnValuesToBeUnique"})
_DIGEST_DTYPE = "S16"


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

    @property
    def key(self) -> tuple[str, str | None]:
        return self.rule, self.kwargs.get("column")


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
        self.uniques = {column: _Duplicates()
                        for column in (*unique_columns(config), leakage_column(config))}
        self.longest: int | None = None

    def add_chunk(self, chunk: pd.DataFrame) -> None:
        """`chunk`: consecutive rows indexed by row number in the file."""
        chunk = with_columns(chunk, self.fields)
        frame = _with_derived_columns(chunk, self.validation.tokenizer, self.validation.config,
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

    def _split_result(self, check: _Check, columns: Sequence[str], num_rows: int
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


class _Duplicates:
    """Exact duplicate detection over a whole split, one chunk at a time.

    Keeps (digest, row) per non-null value; `result` sorts once and reports every row whose
    value occurs more than once, as GX's expect_column_values_to_be_unique does."""

    def __init__(self) -> None:
        self.digests: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.string_digests: list[np.ndarray] = []

    def add(self, values: pd.Series) -> None:
        keys = [_value_digest(v) for v in values]
        present = np.fromiter((k is not None for k in keys), dtype=bool, count=len(keys))
        digests = np.array([k or b"" for k in keys], dtype=_DIGEST_DTYPE)
        self.digests.append(digests[present])
        self.rows.append(values.index.to_numpy(dtype=np.int64)[present])
        is_text = np.fromiter((isinstance(v, str) for v in values), dtype=bool,
                              count=len(values))
        self.string_digests.append(digests[is_text])

    def result(self) -> tuple[int, list[int]]:
        """(rows holding a repeated value, the first MAX_EXAMPLE_ROWS of them)."""
        if not self.digests:
            return 0, []
        digests, rows = np.concatenate(self.digests), np.concatenate(self.rows)
        order = np.argsort(digests, kind="stable")
        digests, rows = digests[order], rows[order]
        repeated = np.zeros(len(digests), dtype=bool)
        same_as_next = digests[1:] == digests[:-1]
        repeated[1:] |= same_as_next
        repeated[:-1] |= same_as_next
        duplicate_rows = np.sort(rows[repeated])
        return int(duplicate_rows.size), [int(r) for r in duplicate_rows[:MAX_EXAMPLE_ROWS]]

    def unique_string_digests(self) -> np.ndarray:
        if not self.string_digests:
            return np.array([], dtype=_DIGEST_DTYPE)
        return np.unique(np.concatenate(self.string_digests))


def _value_digest(value: Any) -> bytes | None:
    """128-bit digest identifying a value as Python equality does (1 == 1.0); None for null.
    Distinct values collide with probability about n^2 / 2^129 (1e-27 at a million rows)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        payload = b"s" + value.encode("utf-8", "surrogatepass")
    elif isinstance(value, bool | np.bool_):
        payload = b"b" + str(bool(value)).encode()
    elif isinstance(value, int | np.integer):
        payload = b"n" + str(int(value)).encode()
    elif isinstance(value, float | np.floating):
        number = float(value)
        payload = b"n" + (str(int(number)) if number.is_integer() else repr(number)).encode()
    else:
        payload = b"r" + repr(value).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(payload, digest_size=16).digest()


def prompt_membership(prompts: pd.Series, digests: np.ndarray) -> pd.Series:
    """True where the prompt is a string whose digest is in the sorted array `digests`."""
    keys = [_value_digest(v) if isinstance(v, str) else None for v in prompts]
    is_text = np.fromiter((k is not None for k in keys), dtype=bool, count=len(keys))
    candidates = np.array([k or b"" for k in keys], dtype=_DIGEST_DTYPE)
    found = np.zeros(len(keys), dtype=bool)
    if digests.size:
        positions = np.searchsorted(digests, candidates).clip(max=digests.size - 1)
        found = digests[positions] == candidates
    return pd.Series(found & is_text, index=prompts.index)


def input_fields(config: DataConfig) -> tuple[str, ...]:
    """The user's columns an example is made of."""
    if config.format == "chat":
        return (config.messages_field,)
    return config.prompt_field, config.response_field


def unique_columns(config: DataConfig) -> tuple[str, ...]:
    """Columns whose values must be unique in a split (raw, or derived for chat)."""
    if config.format == "chat":
        return CONVERSATION_COLUMN, ID_FIELD
    return config.prompt_field, ID_FIELD


def leakage_column(config: DataConfig) -> str:
    """The column whose values a held-out split must not share with train."""
    return CONVERSATION_PROMPT_COLUMN if config.format == "chat" else config.prompt_field


def has_leakage_source(config: DataConfig, columns: Sequence[str]) -> bool:
    """Whether a split with these columns yields a leakage set (its rows can be read)."""
    return input_fields(config)[0] in columns


def with_columns(chunk: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """`chunk` with every one of `columns`, a column no row of this chunk has being null."""
    missing = [c for c in columns if c not in chunk.columns]
    if not missing:
        return chunk
    return chunk.assign(**{c: pd.Series([None] * len(chunk), index=chunk.index, dtype=object)
                           for c in missing})


def _suite(gx: Any, split: str, checks: list[_Check]) -> Any:
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


def _with_derived_columns(
    frame: pd.DataFrame,
    tokenizer: PreTrainedTokenizerBase,
    config: DataConfig,
    train_prompts: np.ndarray | None,
) -> pd.DataFrame:
    if config.format == "chat":
        return _with_chat_columns(frame, tokenizer, config, train_prompts)
    prompt, response = config.prompt_field, config.response_field
    out = frame.copy()
    # Only rows whose both fields are strings can be formatted; the others are reported by
    # the type/null rules, and NaN here keeps them out of the token-length rule.
    usable = out[prompt].map(_is_str) & out[response].map(_is_str)
    counts = count_example_tokens(
        tokenizer, list(out.loc[usable, prompt]), list(out.loc[usable, response])
    )
    out[NUM_TOKENS_COLUMN] = pd.Series(counts, index=out.index[usable], dtype="float64")
    if train_prompts is not None:
        out[IN_TRAIN_COLUMN] = prompt_membership(out[prompt], train_prompts)
    return out


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _with_chat_columns(
    frame: pd.DataFrame,
    tokenizer: PreTrainedTokenizerBase,
    config: DataConfig,
    train_prompts: np.ndarray | None,
) -> pd.DataFrame:
    rows = [_chat_row(value, tokenizer) for value in frame[config.messages_field]]
    out = frame.copy()
    for position, column in enumerate(CHAT_RULE_COLUMNS.values()):
        out[column] = pd.Series([row[0][position] for row in rows], index=out.index,
                                dtype=object)
    out[NUM_TOKENS_COLUMN] = pd.Series([row[1] for row in rows], index=out.index,
                                       dtype="float64")
    out[CONVERSATION_COLUMN] = pd.Series([row[2] for row in rows], index=out.index,
                                         dtype=object)
    out[CONVERSATION_PROMPT_COLUMN] = pd.Series([row[3] for row in rows], index=out.index,
                                                dtype=object)
    if train_prompts is not None:
        out[IN_TRAIN_COLUMN] = prompt_membership(out[CONVERSATION_PROMPT_COLUMN], train_prompts)
    return out


def _chat_row(value: Any, tokenizer: PreTrainedTokenizerBase
              ) -> tuple[list[bool | None], float, str | None, str | None]:
    """(rule outcomes in CHAT_RULE_COLUMNS order, rendered tokens or NaN, conversation text,
    prompt text) of one messages value."""
    outcomes: list[bool | None] = [None] * len(CHAT_RULE_COLUMNS)
    if _is_null(value):
        return outcomes, math.nan, None, None  # the not_null rule reports it
    messages = chat.as_messages(value)
    outcomes[0] = chat.structure_problem(messages) is None
    if not outcomes[0]:
        return outcomes, math.nan, None, None
    texts = chat.conversation_text(messages), chat.conversation_text(messages[:-1])
    checks = (chat.role_problem, chat.order_problem, chat.assistant_problem)
    for position, problem in enumerate(checks, start=1):
        outcomes[position] = problem(messages) is None
        if not outcomes[position]:
            return outcomes, math.nan, *texts
    try:
        num_tokens = float(len(chat.encode_conversation(tokenizer, messages).ids))
    except chat.ConversationError:
        outcomes[-1] = False
        return outcomes, math.nan, *texts
    outcomes[-1] = True
    return outcomes, num_tokens, *texts


def _is_null(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def build_checks(
    split: str, columns: Sequence[str], config: DataConfig, *, check_leakage: bool
) -> list[_Check]:
    """The rules for one split. Rules on a missing column are left out: GX would only raise."""
    if config.format == "chat":
        return _chat_checks(split, columns, config, check_leakage=check_leakage)
    prompt, response = config.prompt_field, config.response_field
    checks = [_min_rows_check(config)]
    for column, config_field in ((prompt, "prompt_field"), (response, "response_field")):
        checks.append(_column_present_check(column, config_field, columns))
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


def _chat_checks(
    split: str, columns: Sequence[str], config: DataConfig, *, check_leakage: bool
) -> list[_Check]:
    """Chat rows: the structure rules in order, then the token budget, PII and duplicates
    over the conversation's text, and leakage of its prompt (every turn but the last)."""
    messages = config.messages_field
    checks = [_min_rows_check(config), _column_present_check(messages, "messages_field", columns)]
    if messages in columns:
        checks.append(_Check("ExpectColumnValuesToNotBeNull", {"column": messages}, "not_null",
                             "no missing (null) values",
                             "fill in or drop the rows with a missing value"))
        checks += [_chat_rule_check(rule, config) for rule in CHAT_RULE_COLUMNS]
        checks.append(_max_tokens_check(config))
        checks += [replace(check, kwargs={**check.kwargs, "column": CONVERSATION_COLUMN},
                           column=messages)
                   for check in _text_column_checks(CONVERSATION_COLUMN, config)
                   if check.rule in ("no_email", "no_phone")]
        checks.append(_Check(
            "ExpectColumnValuesToBeUnique", {"column": CONVERSATION_COLUMN},
            "unique_conversation", "each conversation (roles and contents) appears once in "
            "the split", "remove the duplicate rows", column=messages,
        ))
        if check_leakage:
            checks.append(_Check(
                "ExpectColumnValuesToBeInSet", {"column": IN_TRAIN_COLUMN, "value_set": [False]},
                "no_train_leakage", f"no conversation of the {split} split asks what a train "
                "conversation asks (every turn but the last)",
                f"drop those rows from {split} (or from train): a held-out split that repeats "
                "training prompts overstates the model's quality", column=messages,
            ))
    if ID_FIELD in columns:
        checks += _id_checks()
    return checks


_CHAT_RULE_WORDS = {
    "chat_structure": (
        "a non-empty list of objects, each with a string 'role' and 'content'",
        'write each row\'s messages as [{"role": "user", "content": "..."}, ...]'),
    "chat_roles": (
        f"every role is one of {list(chat.ROLES)}",
        "rename or drop the messages with another role"),
    "chat_turn_order": (
        "an optional leading system message, then user and assistant turns alternating, "
        "starting with user and ending with assistant",
        "merge consecutive turns of one role, drop a trailing user turn or move the system "
        "message first"),
    "chat_assistant_not_blank": (
        "no assistant turn is empty or whitespace",
        "fill in or drop the conversations with an empty answer"),
    "chat_template_renders": (
        "the base model's chat template renders the conversation, and each assistant turn's "
        "tokens extend its prompt's tokens (needed for the assistant-only loss mask)",
        "fix the content the template refuses; content that starts with blank lines or "
        "spaces merges with the turn header into other tokens: strip it"),
}


def _chat_rule_check(rule: str, config: DataConfig) -> _Check:
    description, fix = _CHAT_RULE_WORDS[rule]
    return _Check("ExpectColumnValuesToBeInSet",
                  {"column": CHAT_RULE_COLUMNS[rule], "value_set": [True]}, rule,
                  description, fix, column=config.messages_field)


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
    if config.format == "chat":
        return _Check(
            "ExpectColumnValuesToBeBetween",
            {"column": NUM_TOKENS_COLUMN, "max_value": config.max_example_tokens},
            "max_tokens",
            f"the conversation rendered by the chat template has at most "
            f"{config.max_example_tokens} tokens (data.max_example_tokens); chat examples are "
            "never truncated",
            "shorten or drop those rows, or raise data.max_example_tokens (and train.seq_len)",
            column=config.messages_field,
        )
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
