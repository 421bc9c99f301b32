"""Fixtures for chat-format tests: the tiny SmolLM2-shaped chat model (real tokenizer and chat
template, random weights) and small chat datasets cut from the shipped data/chat splits.

Import the fixtures into a test module (``from tests.training.chat_fixtures import ...``); the
model is built once per test session whichever module asks first (~10 s: the tokenizer is read
from the packaged GGUF)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from common.settings import PROJECT_ROOT

CHAT_DIR = PROJECT_ROOT / "data" / "chat"
# Rows per split of the small datasets: above data.min_rows_per_split=10, short to train on.
SMALL_CHAT_ROWS = {"train": 16, "validation": 10, "eval": 10}


def read_chat_split(split: str) -> list[dict[str, Any]]:
    with open(CHAT_DIR / f"{split}.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _shared_dir(factory: pytest.TempPathFactory, name: str) -> Path:
    return factory.getbasetemp() / name


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """testing.tiny_chat_model: SmolLM2's shape, tokenizer and chat template at ~10 M params."""
    from testing.tiny_chat_model import build_tiny_chat_model

    out = _shared_dir(tmp_path_factory, "tiny-chat-model")
    if not (out / "config.json").is_file():
        build_tiny_chat_model(out)
    return out


@pytest.fixture(scope="session")
def small_chat_dataset_dir(tmp_path_factory: pytest.TempPathFactory,
                           tiny_chat_model_dir: Path) -> Path:
    """The first SMALL_CHAT_ROWS rows of each shipped chat split through the real
    validate_data stage with the tiny chat model's tokenizer."""
    from data.config import DataConfig
    from data.stage import validate_dataset

    out = _shared_dir(tmp_path_factory, "small-chat-dataset")
    if (out / "train.tokens.json").is_file():
        return out
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    inputs = _shared_dir(tmp_path_factory, "small-chat-input")
    for split, rows in SMALL_CHAT_ROWS.items():
        write_jsonl(inputs / f"{split}.jsonl", read_chat_split(split)[:rows])
    config = DataConfig(format="chat", base_model_dir=str(tiny_chat_model_dir),
                        max_example_tokens=256, train_path=str(inputs / "train.jsonl"),
                        validation_path=str(inputs / "validation.jsonl"),
                        eval_path=str(inputs / "eval.jsonl"))
    return validate_dataset(config, out).output_dir
