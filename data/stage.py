"""`validate_dataset`: the Flyte-free data stage.

Streams the three splits in chunks (`data.chunk_rows`): one pass over train builds the
tokenizer, then one pass per split runs the Great Expectations suite chunk by chunk while the
normalized split and its packed token stream are written out incrementally. Only if every
blocking rule passes is one directory published:

    output_dir/
      train.jsonl, validation.jsonl, eval.jsonl   columns exactly: id, prompt, response
                                                  (data.format "chat": id, messages)
      train.tokens.bin/.json,                     the training token stream of train and
      validation.tokens.bin/.json                 validation (common.token_file), memory-mapped
                                                  by train; for chat, format v2 with the
                                                  assistant-only loss mask and example offsets
      tokenizer/                                  HF format (save_pretrained)
      validation_report.json, validation_report.html

Memory holds one chunk, plus a 16-byte digest and a row number per value for the split-wide
duplicate rules and the BPE trainer's per-word state over at most
`data.tokenizer_train_max_rows` train rows (see docs/benchmarks.md, Data scaling).

The directory is assembled in a hidden sibling and renamed into place at the end, so a crash
or a rejection never leaves something at `output_dir` that looks like a valid dataset. When
the data is rejected the reports go to ``<output_dir>.rejected/`` and the error points there.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from common.digests import sha256_file, sha256_tree
from data.config import SPLITS, DataConfig
from data.io import ReadLimits, SplitReader, sha256_location
from data.report import ValidationReport, describe_result
from data.stage_checks import check_config
from data.stage_publish import (
    REJECTED_SUFFIX,
    REPORT_HTML_NAME,
    REPORT_JSON_NAME,
    TOKENIZER_DIRNAME,
    new_staging_dir,
    reject,
    replace_dir,
    write_reports,
)
from data.stage_tokenizer import build_tokenizer, verify_tokenizer
from data.stage_writer import TOKENIZED_SPLITS, SplitWriter, normalized_records
from data.tokenizer import save_tokenizer
from data.validation import Validation
from data.validation_columns import with_columns
from data.validation_rules import ID_FIELD, has_leakage_source, input_fields

# The public API, wherever each part now lives: the checks before any read in stage_checks.py,
# the tokenizer in stage_tokenizer.py, the split writer in stage_writer.py, the staging and
# reports in stage_publish.py; this module runs the stage.
__all__ = [
    "REJECTED_SUFFIX", "REPORT_HTML_NAME", "REPORT_JSON_NAME", "TOKENIZED_SPLITS",
    "TOKENIZER_DIRNAME", "ValidationOutcome", "build_tokenizer", "check_config",
    "normalized_records", "validate_dataset",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationOutcome:
    output_dir: Path
    # sha256 of each normalized split file in output_dir, by split name
    split_digests: dict[str, str]
    split_rows: dict[str, int]
    # common.digests.sha256_tree of output_dir/tokenizer
    tokenizer_digest: str
    # sha256 of output_dir/validation_report.json
    report_digest: str
    report_html: str
    report: ValidationReport
    # sha256 of each token file and its header, by file name (train.tokens.bin, ...)
    token_file_digests: dict[str, str]


def validate_dataset(config: DataConfig, output_dir: Path) -> ValidationOutcome:
    """Validate the configured splits and publish them, normalized, into `output_dir`.

    Raises `StageError` with code ``DATA_VALIDATION_FAILED`` (details: ``report_json``,
    ``report_html``, ``report``) when a blocking rule fails; config and input problems raise
    before any expensive work.
    """
    started = time.monotonic()
    output_dir = Path(output_dir).resolve()
    locations = check_config(config, output_dir)
    limits = ReadLimits(max_file_bytes=config.max_file_bytes, max_row_bytes=config.max_row_bytes,
                        nested_fields=(config.messages_field,) if config.format == "chat" else ())
    readers = {split: SplitReader(split, locations[split], limits, config.chunk_rows,
                                  config.chunk_bytes) for split in SPLITS}
    inputs = {
        split: {"location": locations[split], "sha256": sha256_location(locations[split])}
        for split in SPLITS
    }
    tokenizer = build_tokenizer(config, readers["train"])
    staging = new_staging_dir(output_dir)
    try:
        tokenizer_dir = staging / TOKENIZER_DIRNAME
        save_tokenizer(tokenizer, tokenizer_dir)
        # The token stream is encoded by the tokenizer as train will load it from disk.
        saved_tokenizer = verify_tokenizer(tokenizer_dir)
        published = _stream_splits(config, readers, tokenizer, saved_tokenizer, staging,
                                   sha256_tree(tokenizer_dir), inputs)
        if not published.report.passed:
            raise reject(published.report, output_dir, locations)
        for warning in published.report.warnings:
            logger.warning("data validation warning: %s", describe_result(warning))
        json_path, _ = write_reports(staging, published.report)
        outcome = ValidationOutcome(
            output_dir=output_dir,
            split_digests=published.split_digests,
            split_rows=dict(published.report.split_rows),
            tokenizer_digest=sha256_tree(tokenizer_dir),
            report_digest=sha256_file(json_path),
            report_html=published.report.to_html(),
            report=published.report,
            token_file_digests=published.token_file_digests,
        )
        replace_dir(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # A stale rejection report next to a valid dataset would only confuse.
    shutil.rmtree(output_dir.with_name(output_dir.name + REJECTED_SUFFIX), ignore_errors=True)
    logger.info("validate_dataset: %s in %.1f s", output_dir, time.monotonic() - started)
    return outcome


@dataclass(frozen=True)
class _Streamed:
    report: ValidationReport
    split_digests: dict[str, str]
    token_file_digests: dict[str, str]


def _stream_splits(
    config: DataConfig, readers: dict[str, SplitReader], tokenizer: PreTrainedTokenizerBase,
    saved_tokenizer: PreTrainedTokenizerBase, staging: Path, tokenizer_digest: str,
    inputs: dict[str, dict[str, str]],
) -> _Streamed:
    """One pass per split, train first (its prompts are the leakage set of the others)."""
    validation = Validation(tokenizer, config)
    results = []
    split_digests: dict[str, str] = {}
    token_digests: dict[str, str] = {}
    longest: dict[str, int] = {}
    train_prompts: np.ndarray | None = None
    for split in SPLITS:
        reader = readers[split]
        checker = validation.split(split, None if split == "train" else train_prompts)
        writer = SplitWriter(staging, split, config, saved_tokenizer, tokenizer_digest)
        with writer:
            for chunk in reader:
                chunk = with_columns(chunk, (*input_fields(config), ID_FIELD))
                checker.add_chunk(chunk)
                writer.add_chunk(chunk)
            split_digests[split], digests = writer.close()
        token_digests.update(digests)
        results += checker.finish(reader.columns, reader.rows)
        if checker.longest is not None:
            longest[split] = checker.longest
        if split == "train" and has_leakage_source(config, reader.columns):
            train_prompts = checker.prompt_digests()
    report = validation.report(results, {split: readers[split].rows for split in SPLITS},
                               longest, inputs)
    return _Streamed(report, split_digests, token_digests)

