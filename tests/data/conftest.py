"""Shared fixtures for the data stage: small real datasets cut from the shipped corpus."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from data.config import DataConfig
from data.generate import DEFAULT_OUT_DIR as CORPUS_DIR

SMALL_ROWS = {"train": 12, "validation": 10, "eval": 10}
SMALL_MIN_ROWS = 10


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


@pytest.fixture(scope="session")
def corpus_records() -> dict[str, list[dict[str, Any]]]:
    return {split: read_jsonl(CORPUS_DIR / f"{split}.jsonl") for split in SMALL_ROWS}


@pytest.fixture
def small_splits(corpus_records: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict]]:
    """A valid dataset just above the row minimum; tests mutate their own copy."""
    return {split: copy.deepcopy(corpus_records[split][:n]) for split, n in SMALL_ROWS.items()}


WriteSplits = Callable[..., DataConfig]


@pytest.fixture
def write_splits(tmp_path: Path) -> WriteSplits:
    """Write splits as JSONL or Parquet under tmp_path and return a DataConfig reading them."""

    def write(
        splits: dict[str, list[dict]], suffix: str = ".jsonl", **overrides: Any
    ) -> DataConfig:
        input_dir = tmp_path / "input"
        input_dir.mkdir(exist_ok=True)
        fields: dict[str, Any] = {"min_rows_per_split": SMALL_MIN_ROWS}
        for split, records in splits.items():
            path = input_dir / f"{split}{suffix}"
            if suffix == ".parquet":
                pd.DataFrame.from_records(records).to_parquet(path)
            else:
                write_jsonl(path, records)
            fields[f"{split}_path"] = str(path)
        return DataConfig(**{**fields, **overrides})

    return write


@pytest.fixture(scope="session")
def corpus_tokenizer(corpus_records: dict[str, list[dict[str, Any]]]) -> Any:
    """The BPE the stage trains on the shipped train split (trained once per test session)."""
    from common.template import format_example
    from data.tokenizer import EOS_TOKEN, train_bpe_tokenizer

    texts = [format_example(r["instruction"], r["response"], EOS_TOKEN)
             for r in corpus_records["train"]]
    return train_bpe_tokenizer(texts, DataConfig().tokenizer_vocab_size)
