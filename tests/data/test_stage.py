"""validate_dataset end to end with real Great Expectations: what passes, what is rejected and
what a rejected user is told."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from common.digests import sha256_file, sha256_tree
from common.errors import StageError
from data.config import DataConfig
from data.stage import validate_dataset

pytestmark = pytest.mark.integration

Splits = dict[str, list[dict[str, Any]]]


def _files_in(directory: Path) -> list[str]:
    # "home" is the isolated HOME that tests/conftest.py gives every test.
    return sorted(p.name for p in directory.iterdir() if p.name != "home")


def test_shipped_corpus_passes_and_publishes_a_normalized_dataset(tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    outcome = validate_dataset(DataConfig(), out)

    assert outcome.report.passed and not outcome.report.warnings
    assert set(outcome.report.longest_example_tokens) == {"train", "validation", "eval"}
    assert max(outcome.report.longest_example_tokens.values()) <= 128
    assert outcome.split_rows == {"train": 8000, "validation": 500, "eval": 500}
    assert _files_in(out) == ["eval.jsonl", "tokenizer", "train.jsonl", "train.tokens.bin",
                              "train.tokens.json", "validation.jsonl", "validation.tokens.bin",
                              "validation.tokens.json", "validation_report.html",
                              "validation_report.json"]
    for split, digest in outcome.split_digests.items():
        assert sha256_file(out / f"{split}.jsonl") == digest
    assert set(outcome.token_file_digests) == {"train.tokens.bin", "train.tokens.json",
                                               "validation.tokens.bin", "validation.tokens.json"}
    for name, digest in outcome.token_file_digests.items():
        assert sha256_file(out / name) == digest
    assert sha256_tree(out / "tokenizer") == outcome.tokenizer_digest
    assert sha256_file(out / "validation_report.json") == outcome.report_digest
    first = json.loads((out / "eval.jsonl").read_text().splitlines()[0])
    assert list(first) == ["id", "prompt", "response"]
    assert AutoTokenizer.from_pretrained(str(out / "tokenizer")).eos_token == "</s>"
    assert _files_in(tmp_path) == ["dataset"]  # no staging dir left over


def _drop_column(splits: Splits) -> None:
    for row in splits["validation"]:
        del row["response"]


def _null_value(splits: Splits) -> None:
    splits["train"][3]["response"] = None


def _too_long(splits: Splits) -> None:
    splits["eval"][2]["instruction"] = "Repeat: " + "ship yard " * 150


def _duplicate(splits: Splits) -> None:
    splits["train"][5]["instruction"] = splits["train"][1]["instruction"]


def _leak(splits: Splits) -> None:
    splits["eval"][4]["instruction"] = splits["train"][0]["instruction"]


def _email(splits: Splits) -> None:
    splits["validation"][6]["response"] = "Write to jane.doe@example.org"


def _phone(splits: Splits) -> None:
    splits["train"][7]["instruction"] = "Call +1 415 555 0100 and ask."


def _too_few(splits: Splits) -> None:
    del splits["eval"][3:]


BAD_DATA = {
    # case: (mutation, fragments the message must contain: split, column, rule, evidence)
    "missing column": (_drop_column, ["split 'validation'", "column 'response'",
                                      "'column_present'", "columns found: ['id', 'task',"
                                      " 'instruction']"]),
    "null value": (_null_value, ["split 'train'", "column 'response'", "'not_null'",
                                 "1 row(s)", "rows [3]"]),
    "too long": (_too_long, ["split 'eval'", "column 'instruction+response'", "'max_tokens'",
                             "at most 128 tokens", "1 row(s)", "rows [2]"]),
    "duplicate": (_duplicate, ["split 'train'", "column 'instruction'", "'unique_prompt'",
                               "2 row(s)", "rows [1, 5]"]),
    "leakage": (_leak, ["split 'eval'", "column 'instruction'", "'no_train_leakage'",
                        "1 row(s)", "rows [4]"]),
    "email": (_email, ["split 'validation'", "column 'response'", "'no_email'", "1 row(s)",
                       "rows [6]", "pii_action='warn'"]),
    "phone": (_phone, ["split 'train'", "column 'instruction'", "'no_phone'", "1 row(s)",
                       "rows [7]"]),
    "too few rows": (_too_few, ["split 'eval'", "'min_rows'", "at least 10 rows",
                                "observed value 3"]),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_rejected_with_split_column_count_and_rows(
    case: str, small_splits: Splits, write_splits: Callable[..., DataConfig], tmp_path: Path
) -> None:
    mutate, fragments = BAD_DATA[case]
    mutate(small_splits)
    config = write_splits(small_splits)
    out = tmp_path / "dataset"

    with pytest.raises(StageError) as caught:
        validate_dataset(config, out)

    error = caught.value
    assert error.code == "DATA_VALIDATION_FAILED"
    assert error.message.startswith("1 data expectation(s) failed"), error.message
    for fragment in fragments:
        assert fragment in error.message, f"{fragment!r} not in:\n{error.message}"
    assert "Fix:" in error.message
    # Nothing that looks like a dataset; the report is kept apart and named in the error.
    assert not out.exists()
    assert _files_in(tmp_path) == ["dataset.rejected", "input"]
    report = json.loads(Path(error.details["report_json"]).read_text())
    assert report["passed"] is False
    assert Path(error.details["report_html"]).is_file()
    assert error.details["report_html"] in error.message


def test_every_failed_expectation_is_listed(
    small_splits: Splits, write_splits: Callable[..., DataConfig], tmp_path: Path
) -> None:
    _null_value(small_splits)
    _leak(small_splits)
    _too_few(small_splits)  # eval keeps rows 0-2; the leak at row 4 is gone with it
    _email(small_splits)
    with pytest.raises(StageError) as caught:
        validate_dataset(write_splits(small_splits), tmp_path / "dataset")
    lines = caught.value.message.splitlines()
    assert lines[0] == "3 data expectation(s) failed:"
    assert any("'train'" in line and "'not_null'" in line for line in lines)
    assert any("'eval'" in line and "'min_rows'" in line for line in lines)
    assert any("'validation'" in line and "'no_email'" in line for line in lines)


def test_pii_warn_mode_publishes_and_reports_a_warning(
    small_splits: Splits, write_splits: Callable[..., DataConfig], tmp_path: Path
) -> None:
    _email(small_splits)
    outcome = validate_dataset(write_splits(small_splits, pii_action="warn"), tmp_path / "out")

    assert outcome.report.passed
    [warning] = outcome.report.warnings
    assert (warning.split, warning.rule, warning.column, warning.severity) == (
        "validation", "no_email", "response", "warning")
    assert warning.example_rows == [6]
    assert (tmp_path / "out" / "validation.jsonl").is_file()
    assert "warn" in outcome.report_html


def test_parquet_input_without_ids_gets_generated_ids(
    small_splits: Splits, write_splits: Callable[..., DataConfig], tmp_path: Path
) -> None:
    for rows in small_splits.values():
        for row in rows:
            del row["id"]
    outcome = validate_dataset(write_splits(small_splits, suffix=".parquet"), tmp_path / "out")

    records = [json.loads(line) for line in
               (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records[:2]] == ["train-0", "train-1"]
    assert records[0]["prompt"] == small_splits["train"][0]["instruction"]
    assert outcome.split_rows == {"train": 12, "validation": 10, "eval": 10}


def test_rejected_rerun_leaves_the_previous_valid_output_untouched(
    small_splits: Splits, write_splits: Callable[..., DataConfig], tmp_path: Path
) -> None:
    out = tmp_path / "dataset"
    first = validate_dataset(write_splits(small_splits), out)
    _duplicate(small_splits)
    with pytest.raises(StageError):
        validate_dataset(write_splits(small_splits), out)
    assert sha256_file(out / "train.jsonl") == first.split_digests["train"]


def test_config_errors_fail_before_reading_any_data(
    small_splits: Splits, write_splits: Callable[..., DataConfig], tmp_path: Path
) -> None:
    config = write_splits(small_splits)
    config.eval_path = str(tmp_path / "eval.csv")
    # The train file is unreadable too, but the config check runs first and says so plainly.
    Path(config.train_path).write_text("not json\n")
    with pytest.raises(StageError) as caught:
        validate_dataset(config, tmp_path / "dataset")
    assert caught.value.code == "DATA_UNSUPPORTED_FORMAT"
    assert "data.eval_path" in caught.value.message
    assert not (tmp_path / "dataset").exists()


def test_output_dir_holding_the_inputs_is_refused(
    small_splits: Splits, write_splits: Callable[..., DataConfig], tmp_path: Path
) -> None:
    config = write_splits(small_splits)
    with pytest.raises(StageError, match="contains the input"):
        validate_dataset(config, tmp_path / "input")
    assert Path(config.train_path).is_file()


def test_base_model_tokenizer_is_published_instead_of_a_trained_one(
    small_splits: Splits, write_splits: Callable[..., DataConfig], tmp_path: Path
) -> None:
    trained = validate_dataset(write_splits(small_splits), tmp_path / "first")
    config = write_splits(small_splits, base_model_dir=str(tmp_path / "first" / "tokenizer"),
                          tokenizer_vocab_size=1)  # ignored: the base tokenizer is used as is
    outcome = validate_dataset(config, tmp_path / "second")
    assert outcome.tokenizer_digest == trained.tokenizer_digest


def test_missing_base_model_dir_is_a_config_error(
    small_splits: Splits, write_splits: Callable[..., DataConfig], tmp_path: Path
) -> None:
    config = write_splits(small_splits, base_model_dir=str(tmp_path / "no-model"))
    with pytest.raises(StageError, match=r"data\.base_model_dir") as caught:
        validate_dataset(config, tmp_path / "dataset")
    assert caught.value.code == "CONFIG_INVALID"
