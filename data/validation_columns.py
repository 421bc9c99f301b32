"""The derived columns of a chunk (data/validation.py): what GX cannot check on the raw
columns (an example's token count, the chat rules' outcomes, the conversation's text, train
leakage) becomes a column that a plain GX expectation checks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

from data import chat
from data.config import DataConfig
from data.tokenizer import count_example_tokens
from data.validation_digests import prompt_membership
from data.validation_rules import (
    CHAT_RULE_COLUMNS,
    CONVERSATION_COLUMN,
    CONVERSATION_PROMPT_COLUMN,
    IN_TRAIN_COLUMN,
    NUM_TOKENS_COLUMN,
)


def with_columns(chunk: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """`chunk` with every one of `columns`, a column no row of this chunk has being null."""
    missing = [c for c in columns if c not in chunk.columns]
    if not missing:
        return chunk
    return chunk.assign(**{c: pd.Series([None] * len(chunk), index=chunk.index, dtype=object)
                           for c in missing})


def with_derived_columns(
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
