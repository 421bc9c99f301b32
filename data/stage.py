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

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from common.digests import sha256_file, sha256_tree
from common.errors import StageError
from common.html import page
from common.template import format_example
from common.token_file import ChatTokenFileWriter, TokenFileWriter, example_token_stream
from data import chat
from data.config import SPLITS, DataConfig
from data.io import (
    ReadLimits,
    SplitReader,
    check_split_location,
    is_uri,
    resolve_location,
    sha256_location,
)
from data.report import ValidationReport, describe_result, failure_message
from data.tokenizer import (
    EOS_TOKEN,
    MIN_VOCAB_SIZE,
    load_base_tokenizer,
    save_tokenizer,
    train_bpe_tokenizer,
)
from data.validation import (
    ID_FIELD,
    Validation,
    has_leakage_source,
    input_fields,
    with_columns,
)

logger = logging.getLogger(__name__)

TOKENIZER_DIRNAME = "tokenizer"
REPORT_JSON_NAME = "validation_report.json"
REPORT_HTML_NAME = "validation_report.html"
REJECTED_SUFFIX = ".rejected"
# The splits train reads, packed into token files.
TOKENIZED_SPLITS = ("train", "validation")


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
    staging = _new_staging_dir(output_dir)
    try:
        tokenizer_dir = staging / TOKENIZER_DIRNAME
        save_tokenizer(tokenizer, tokenizer_dir)
        # The token stream is encoded by the tokenizer as train will load it from disk.
        saved_tokenizer = _verify_tokenizer(tokenizer_dir)
        published = _stream_splits(config, readers, tokenizer, saved_tokenizer, staging,
                                   sha256_tree(tokenizer_dir), inputs)
        if not published.report.passed:
            raise _reject(published.report, output_dir, locations)
        for warning in published.report.warnings:
            logger.warning("data validation warning: %s", describe_result(warning))
        json_path, _ = _write_reports(staging, published.report)
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
        _replace_dir(staging, output_dir)
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
        writer = _SplitWriter(staging, split, config, saved_tokenizer, tokenizer_digest)
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


class _SplitWriter:
    """Writes the normalized split and, for train and validation, its token stream, chunk by
    chunk. A chunk with a row that is not text (which the rules reject) stops the token
    stream: a rejected split is never published, so nothing is lost."""

    def __init__(self, staging: Path, split: str, config: DataConfig,
                 tokenizer: PreTrainedTokenizerBase, tokenizer_digest: str):
        self.split, self.config, self.tokenizer = split, config, tokenizer
        self.path = staging / f"{split}.jsonl"
        self._handle: IO[bytes] = open(self.path, "wb")  # noqa: SIM115 (closed in close)
        self._sha = hashlib.sha256()
        writer = ChatTokenFileWriter if config.format == "chat" else TokenFileWriter
        self.tokens = (writer(staging, split, len(tokenizer), tokenizer_digest)
                       if split in TOKENIZED_SPLITS else None)
        self.tokenizable = True

    def add_chunk(self, chunk: pd.DataFrame) -> None:
        records = normalized_records(chunk, self.split, self.config)
        # default=str: a malformed chat row (rejected by the rules, never published) must not
        # stop the pass that reports it
        data = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n"
                       for r in records).encode()
        self._handle.write(data)
        self._sha.update(data)
        if self.tokens is None or not self.tokenizable:
            return
        if isinstance(self.tokens, ChatTokenFileWriter):
            self._add_conversations([r["messages"] for r in records])
            return
        examples = [(r["prompt"], r["response"]) for r in records]
        if not all(isinstance(p, str) and isinstance(r, str) for p, r in examples):
            self.tokenizable = False
            return
        self.tokens.append(example_token_stream(self.tokenizer, examples), len(examples))

    def _add_conversations(self, conversations: list[Any]) -> None:
        assert isinstance(self.tokens, ChatTokenFileWriter)
        encoded = []
        for messages in conversations:
            if not _is_usable_conversation(messages):
                self.tokenizable = False
                return
            try:
                example = chat.encode_conversation(self.tokenizer, messages)
            except chat.ConversationError:
                self.tokenizable = False
                return
            encoded.append((example.ids, example.loss_mask))
        self.tokens.append(encoded)

    def close(self) -> tuple[str, dict[str, str]]:
        """(sha256 of the normalized split, digests of the token files by name)."""
        self._handle.close()
        return self._sha.hexdigest(), self.tokens.close() if self.tokens is not None else {}

    def __enter__(self) -> _SplitWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._handle.close()
        if self.tokens is not None:
            self.tokens.__exit__(None, None, None)


def check_config(config: DataConfig, output_dir: Path) -> dict[str, str]:
    """Everything that can be checked without reading the data. Returns split -> location."""
    if config.prompt_field == config.response_field:
        raise StageError(
            "CONFIG_INVALID",
            f"data.prompt_field and data.response_field are both {config.prompt_field!r}: "
            "point them at two different columns.",
        )
    if config.base_model_dir is None and config.tokenizer_vocab_size < MIN_VOCAB_SIZE:
        raise StageError(
            "CONFIG_INVALID",
            f"data.tokenizer_vocab_size={config.tokenizer_vocab_size}: a byte-level BPE needs "
            f"at least {MIN_VOCAB_SIZE} (256 bytes + special tokens). Raise it.",
        )
    if config.base_model_dir is not None and not _base_model_path(config).is_dir():
        raise StageError(
            "CONFIG_INVALID",
            f"data.base_model_dir={config.base_model_dir!r}: no directory at "
            f"{_base_model_path(config)}. Point it at a local model directory (relative paths "
            "resolve against the project root) or unset it to train a tokenizer.",
        )
    locations = {split: config.split_paths()[split] for split in SPLITS}
    for split, location in locations.items():
        check_split_location(split, location)
    _check_output_dir(output_dir, config, locations)
    return locations


def _base_model_path(config: DataConfig) -> Path:
    assert config.base_model_dir is not None
    return Path(resolve_location(config.base_model_dir))


def _check_output_dir(output_dir: Path, config: DataConfig, locations: dict[str, str]) -> None:
    # Publishing replaces output_dir wholesale; refuse if that would delete our own inputs.
    inputs = [Path(resolve_location(loc)) for loc in locations.values() if not is_uri(loc)]
    if config.base_model_dir is not None:
        inputs.append(_base_model_path(config))
    for path in inputs:
        if path.resolve().is_relative_to(output_dir):
            raise StageError(
                "CONFIG_INVALID",
                f"output directory {output_dir} contains the input {path}; publishing would "
                "replace it. Write the validated dataset somewhere else.",
            )


def build_tokenizer(config: DataConfig, train: SplitReader) -> PreTrainedTokenizerBase:
    """The base model's tokenizer when configured, else a BPE trained on the train split,
    streamed through once."""
    if config.format == "chat":
        tokenizer = load_base_tokenizer(_base_model_path(config), keep_chat_template=True)
        chat.check_chat_template(tokenizer, str(config.base_model_dir))
        return tokenizer
    if config.base_model_dir is not None:
        return load_base_tokenizer(_base_model_path(config))
    tokenizer = train_bpe_tokenizer(_training_texts(config, train), config.tokenizer_vocab_size)
    if len(tokenizer) < config.tokenizer_vocab_size:
        # BPE stops when no pair is left to merge: a small corpus cannot fill a big vocabulary.
        # Not an error, but the model must size its embeddings from len(tokenizer).
        logger.warning(
            "tokenizer: the train split supports only %d tokens, fewer than "
            "data.tokenizer_vocab_size=%d", len(tokenizer), config.tokenizer_vocab_size,
        )
    return tokenizer


def _training_texts(config: DataConfig, train: SplitReader) -> Iterator[str]:
    """The formatted examples of the first `data.tokenizer_train_max_rows` rows of train, in
    file order; reading stops there (the validation pass reads every row)."""
    prompt, response = config.prompt_field, config.response_field
    remaining = config.tokenizer_train_max_rows
    for chunk in train:
        chunk = chunk.iloc[:remaining]
        remaining -= len(chunk)
        if prompt in chunk.columns and response in chunk.columns:
            # (else the schema rule reports the missing column; nothing to learn here)
            yield from (format_example(p, r, EOS_TOKEN)
                        for p, r in zip(chunk[prompt], chunk[response], strict=True)
                        if isinstance(p, str) and isinstance(r, str))
        if remaining <= 0:
            logger.info("tokenizer: trained on the first %d rows of train "
                        "(data.tokenizer_train_max_rows)", config.tokenizer_train_max_rows)
            return


def _reject(
    report: ValidationReport, output_dir: Path, locations: dict[str, str]
) -> StageError:
    """Keep the reports where a user can read them, clearly apart from any valid output."""
    rejected_dir = output_dir.with_name(output_dir.name + REJECTED_SUFFIX)
    staging = _new_staging_dir(output_dir)
    try:
        json_path, html_path = _write_reports(staging, report)
        _replace_dir(staging, rejected_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report_json = rejected_dir / json_path.name
    report_html = rejected_dir / html_path.name
    message = (
        failure_message(report, locations)
        + f"\nFull report: {report_html} (JSON: {report_json})."
    )
    return StageError(
        "DATA_VALIDATION_FAILED",
        message,
        details={"report_json": str(report_json), "report_html": str(report_html),
                 "report": report},
    )


def normalized_records(frame: pd.DataFrame, split: str, config: DataConfig) -> list[dict]:
    """Rows as {"id", "prompt", "response"} (chat: {"id", "messages"}, each message exactly
    {"role", "content"}); a row without an id gets "<split>-<row>", its row number in the file
    (the frame's index)."""
    ids = frame[ID_FIELD] if ID_FIELD in frame.columns else [None] * len(frame)
    if config.format == "chat":
        return [
            {"id": f"{split}-{row}" if _is_null(row_id) else str(row_id),
             "messages": (chat.canonical_messages(messages)
                          if _is_usable_conversation(messages) else messages)}
            for row, row_id, messages in zip(frame.index, ids, frame[config.messages_field],
                                             strict=True)
        ]
    return [
        {"id": f"{split}-{row}" if _is_null(row_id) else str(row_id), "prompt": prompt,
         "response": response}
        for row, row_id, prompt, response in zip(
            frame.index, ids, frame[config.prompt_field], frame[config.response_field],
            strict=True,
        )
    ]


def _is_null(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # NaN


def _is_usable_conversation(messages: Any) -> bool:
    """Whether the chat structure, role and order rules pass (the template may still fail)."""
    if _is_null(messages) or chat.structure_problem(messages) is not None:
        return False
    messages = chat.as_messages(messages)
    return chat.role_problem(messages) is None and chat.order_problem(messages) is None


def _write_reports(directory: Path, report: ValidationReport) -> tuple[Path, Path]:
    json_path = directory / REPORT_JSON_NAME
    html_path = directory / REPORT_HTML_NAME
    json_path.write_text(report.to_json(), encoding="utf-8")
    html_path.write_text(
        page("Data validation", report.to_html()),
        encoding="utf-8",
    )
    return json_path, html_path


def _verify_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    # What training will do next: load it from disk. Fail here, not three stages later.
    reloaded = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if reloaded.eos_token is None or not reloaded("ok")["input_ids"]:
        raise StageError(
            "DATA_TOKENIZER_INVALID",
            f"the tokenizer saved to {directory} does not reload with an eos_token; this is a "
            "bug in the data stage, please report it with the config used.",
        )
    return reloaded


def _new_staging_dir(output_dir: Path) -> Path:
    # A sibling, so the final rename stays on one filesystem and is atomic.
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.staging-", dir=output_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the published dataset is meant to be read
    return staging


def _replace_dir(source: Path, target: Path) -> None:
    """Move `source` to `target`, replacing an existing `target` (a previous run's output)."""
    if not target.exists():
        source.rename(target)
        return
    retired = target.with_name(f".{target.name}.retired-{os.getpid()}")
    shutil.rmtree(retired, ignore_errors=True)
    target.rename(retired)
    source.rename(target)
    shutil.rmtree(retired, ignore_errors=True)
