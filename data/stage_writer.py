"""The normalized split and its token stream, written chunk by chunk by the data stage
(data/stage.py) into its staging directory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO, Any

import pandas as pd
from transformers import PreTrainedTokenizerBase

from common.token_file import ChatTokenFileWriter, TokenFileWriter, example_token_stream
from data import chat
from data.config import DataConfig
from data.validation_rules import ID_FIELD

# The splits train reads, packed into token files.
TOKENIZED_SPLITS = ("train", "validation")


class SplitWriter:
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

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._handle.close()
        if self.tokens is not None:
            self.tokens.__exit__(None, None, None)


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
