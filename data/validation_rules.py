"""The rules each split must pass (data/validation.py runs them): the GX expectation behind
each, with the words the report needs when it fails, and the columns the rules read (the
user's input fields, the derived columns of data/validation_columns.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from data import chat
from data.config import DataConfig
from data.report import SEVERITY_ERROR, SEVERITY_WARNING

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


@dataclass(frozen=True)
class Check:
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


def build_checks(
    split: str, columns: Sequence[str], config: DataConfig, *, check_leakage: bool
) -> list[Check]:
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
        checks.append(Check(
            "ExpectColumnValuesToBeUnique", {"column": prompt}, "unique_prompt",
            "each instruction appears once in the split",
            "remove the duplicate rows or rewrite them into distinct instructions",
        ))
    if prompt in columns and response in columns:
        checks.append(_max_tokens_check(config))
    if check_leakage and prompt in columns:
        checks.append(Check(
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
) -> list[Check]:
    """Chat rows: the structure rules in order, then the token budget, PII and duplicates
    over the conversation's text, and leakage of its prompt (every turn but the last)."""
    messages = config.messages_field
    checks = [_min_rows_check(config), _column_present_check(messages, "messages_field", columns)]
    if messages in columns:
        checks.append(Check("ExpectColumnValuesToNotBeNull", {"column": messages}, "not_null",
                             "no missing (null) values",
                             "fill in or drop the rows with a missing value"))
        checks += [_chat_rule_check(rule, config) for rule in CHAT_RULE_COLUMNS]
        checks.append(_max_tokens_check(config))
        checks += [replace(check, kwargs={**check.kwargs, "column": CONVERSATION_COLUMN},
                           column=messages)
                   for check in _text_column_checks(CONVERSATION_COLUMN, config)
                   if check.rule in ("no_email", "no_phone")]
        checks.append(Check(
            "ExpectColumnValuesToBeUnique", {"column": CONVERSATION_COLUMN},
            "unique_conversation", "each conversation (roles and contents) appears once in "
            "the split", "remove the duplicate rows", column=messages,
        ))
        if check_leakage:
            checks.append(Check(
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


def _chat_rule_check(rule: str, config: DataConfig) -> Check:
    description, fix = _CHAT_RULE_WORDS[rule]
    return Check("ExpectColumnValuesToBeInSet",
                  {"column": CHAT_RULE_COLUMNS[rule], "value_set": [True]}, rule,
                  description, fix, column=config.messages_field)


def _min_rows_check(config: DataConfig) -> Check:
    return Check(
        "ExpectTableRowCountToBeBetween", {"min_value": config.min_rows_per_split},
        "min_rows", f"at least {config.min_rows_per_split} rows (data.min_rows_per_split)",
        "add rows to the split, or lower data.min_rows_per_split",
    )


def _column_present_check(column: str, field: str, columns: Sequence[str]) -> Check:
    return Check(
        "ExpectColumnToExist", {"column": column}, "column_present",
        f"column {column!r} (data.{field}) is present",
        f"add the column, or set data.{field} to one of the columns found: {list(columns)}",
    )


def _text_column_checks(column: str, config: DataConfig) -> list[Check]:
    pii_severity = SEVERITY_ERROR if config.pii_action == "fail" else SEVERITY_WARNING
    pii_fix = (
        "remove or mask the personal data (e.g. as <EMAIL>, <PHONE>), or set "
        "data.pii_action='warn' if it is synthetic"
    )
    return [
        Check("ExpectColumnValuesToBeOfType", {"column": column, "type_": "str"},
               "string_typed", "values are strings", "store the values as JSON strings"),
        Check("ExpectColumnValuesToNotBeNull", {"column": column}, "not_null",
               "no missing (null) values", "fill in or drop the rows with a missing value"),
        Check("ExpectColumnValuesToNotMatchRegex", {"column": column, "regex": BLANK_REGEX},
               "not_blank", "no empty or whitespace-only text",
               "fill in or drop the rows with empty text"),
        Check("ExpectColumnValuesToNotMatchRegex", {"column": column, "regex": EMAIL_REGEX},
               "no_email", "no email addresses (PII)", pii_fix, severity=pii_severity),
        Check("ExpectColumnValuesToNotMatchRegex", {"column": column, "regex": PHONE_REGEX},
               "no_phone", "no phone numbers (PII)", pii_fix, severity=pii_severity),
    ]


def _max_tokens_check(config: DataConfig) -> Check:
    if config.format == "chat":
        return Check(
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
    return Check(
        "ExpectColumnValuesToBeBetween",
        {"column": NUM_TOKENS_COLUMN, "max_value": config.max_example_tokens},
        "max_tokens",
        f"formatted example (template + {both} + EOS) has at most "
        f"{config.max_example_tokens} tokens (data.max_example_tokens)",
        "shorten or drop those rows, or raise data.max_example_tokens (and the model's context)",
        column=both,
    )


def _id_checks() -> list[Check]:
    fix = f"give every row a distinct {ID_FIELD!r}, or drop the column to get generated ids"
    return [
        Check("ExpectColumnValuesToNotBeNull", {"column": ID_FIELD}, "id_not_null",
               "every row has an id", fix),
        Check("ExpectColumnValuesToBeUnique", {"column": ID_FIELD}, "unique_id",
               "ids are unique within the split", fix),
    ]
