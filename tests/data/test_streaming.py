"""Chunked validation is exact: the same counts and example rows as one Great Expectations run
over the whole split, with violations (duplicate ids and prompts included) placed on both
sides of chunk boundaries; and the published files do not depend on the chunk size."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from common.template import format_example
from data.config import SPLITS, DataConfig
from data.io import SplitReader
from data.report import MAX_EXAMPLE_ROWS
from data.stage import validate_dataset
from data.tokenizer import EOS_TOKEN, count_example_tokens, train_bpe_tokenizer
from data.validation import (
    IN_TRAIN_COLUMN,
    NUM_TOKENS_COLUMN,
    Validation,
    build_checks,
    with_columns,
)

pytestmark = pytest.mark.integration

Splits = dict[str, list[dict[str, Any]]]
CHUNK_ROWS = 4  # 12 train rows: chunks [0-3] [4-7] [8-11]


def _violations(splits: Splits) -> None:
    train, validation, evaluation = splits["train"], splits["validation"], splits["eval"]
    train[9]["id"] = train[2]["id"]  # duplicate id across chunks 0 and 2
    train[10]["id"] = train[2]["id"]  # ... three times
    train[4]["instruction"] = train[3]["instruction"]  # duplicate prompt across a boundary
    train[7]["response"] = None  # null at the last row of a chunk
    train[8]["response"] = "  "  # blank at the first row of the next
    del train[11]["id"]  # a missing key is a null id
    train[5]["instruction"] = "Mail a.b@example.com " + "ship yard " * 80  # PII and too long
    validation[3]["instruction"] = train[11]["instruction"]  # leaks train's last row
    validation[4]["instruction"] = train[0]["instruction"]  # ... and its first
    validation[8]["id"] = validation[0]["id"]
    for row in evaluation[5:]:
        del row["response"]  # a column missing from every row of the last chunks only


def _fields(result: Any) -> tuple[Any, ...]:
    return (result.rule, result.column, result.success, result.unexpected_count,
            result.example_rows, result.observed_value)


def _whole_split_gx(frame: pd.DataFrame, split: str, config: DataConfig, tokenizer: Any,
                    train_prompts: set[str] | None) -> list[tuple[Any, ...]]:
    """What the stage computed before it streamed: every rule in one GX run on the split."""
    import great_expectations as gx

    prompt, response = config.prompt_field, config.response_field
    frame = frame.copy()
    if prompt in frame and response in frame:
        usable = frame[prompt].map(lambda v: isinstance(v, str)) & \
            frame[response].map(lambda v: isinstance(v, str))
        counts = count_example_tokens(tokenizer, list(frame.loc[usable, prompt]),
                                      list(frame.loc[usable, response]))
        frame[NUM_TOKENS_COLUMN] = pd.Series(counts, index=frame.index[usable], dtype=float)
    if train_prompts is not None:
        frame[IN_TRAIN_COLUMN] = frame[prompt].map(lambda v: v in train_prompts)
    checks = build_checks(split, list(frame.columns.drop([NUM_TOKENS_COLUMN, IN_TRAIN_COLUMN],
                                                         errors="ignore")),
                          config, check_leakage=train_prompts is not None)
    context = gx.get_context(mode="ephemeral")
    suite = gx.ExpectationSuite(name=f"whole_{split}")
    for order, check in enumerate(checks):
        suite.add_expectation(getattr(gx.expectations, check.gx_class)(
            **check.kwargs, meta={"order": order}))
    batch = (context.data_sources.add_pandas("whole").add_dataframe_asset(split)
             .add_batch_definition_whole_dataframe("all").get_batch(
                 batch_parameters={"dataframe": frame}))
    results = sorted(batch.validate(suite, result_format="COMPLETE").results,
                     key=lambda r: r.expectation_config.meta["order"])  # type: ignore[union-attr]
    out = []
    for check, result in zip(checks, results, strict=True):
        details = result.result or {}
        count = details.get("unexpected_count")
        rows = sorted(int(i) for i in details.get("unexpected_index_list") or [])
        out.append((check.rule, check.column or check.kwargs.get("column"), result.success,
                    count, rows[:MAX_EXAMPLE_ROWS],
                    details.get("observed_value") if count is None else None))
    return out


def test_chunked_counts_equal_one_gx_run_over_the_whole_split(
    small_splits: Splits, write_splits: Callable[..., DataConfig]
) -> None:
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    _violations(small_splits)
    config = write_splits(small_splits, chunk_rows=CHUNK_ROWS)
    texts = [format_example(r["instruction"], r["response"], EOS_TOKEN)
             for r in small_splits["train"] if isinstance(r.get("response"), str)]
    tokenizer = train_bpe_tokenizer(texts, 300)
    validation = Validation(tokenizer, config)
    train_digests, train_prompts = None, None
    streamed: dict[str, dict[tuple[str, str | None], tuple[Any, ...]]] = {}
    for split in SPLITS:
        reader = SplitReader(split, config.split_paths()[split], chunk_rows=CHUNK_ROWS)
        checker = validation.split(split, train_digests)
        chunks = [with_columns(c, ("instruction", "response", "id")) for c in reader]
        assert len(chunks) == 3
        for chunk in chunks:
            checker.add_chunk(chunk)
        results = [_fields(r) for r in checker.finish(reader.columns, reader.rows)]
        whole = pd.DataFrame.from_records(small_splits[split])
        assert results == _whole_split_gx(whole, split, config, tokenizer, train_prompts), split
        streamed[split] = {(r[0], r[1]): r for r in results}
        if split == "train":
            train_digests = checker.prompt_digests()
            train_prompts = set(whole["instruction"])
    # The evidence the chunk boundaries could have broken, spelled out once.
    assert streamed["train"][("unique_id", "id")][3:5] == (3, [2, 9, 10])
    assert streamed["train"][("unique_prompt", "instruction")][3:5] == (2, [3, 4])
    assert streamed["train"][("id_not_null", "id")][3:5] == (1, [11])
    assert streamed["validation"][("no_train_leakage", "instruction")][3:5] == (2, [3, 4])
    assert streamed["validation"][("unique_id", "id")][3:5] == (2, [0, 8])
    assert streamed["eval"][("not_null", "response")][3:5] == (5, [5, 6, 7, 8, 9])


def test_published_files_do_not_depend_on_the_chunk_size(
    small_splits: Splits, write_splits: Callable[..., DataConfig], tmp_path: Path
) -> None:
    whole = validate_dataset(write_splits(small_splits), tmp_path / "whole")
    chunked = validate_dataset(write_splits(small_splits, chunk_rows=3), tmp_path / "chunked")
    assert chunked.split_digests == whole.split_digests
    assert chunked.token_file_digests == whole.token_file_digests
    assert chunked.tokenizer_digest == whole.tokenizer_digest
    assert chunked.report.results == whole.report.results
