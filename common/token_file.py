"""The packed token file: the training token stream of one split, written by validate_data,
memory-mapped by train.

    <split>.tokens.bin    the stream as a flat little-endian array (uint16 when every id fits,
                          else uint32): for each example, in file order,
                          ``bos + encode(format_example(prompt, response, "")) + eos``
    <split>.tokens.json   the header: format, dtype, token and example counts, vocabulary size
                          and the digest of the tokenizer that wrote it

That is format v1 (`FORMAT`), the packed stream of prompt/response examples. Chat datasets
(`data.format: chat`) write format v2 (`CHAT_FORMAT`) under the same two names: the .bin file
holds three sections, so one digest still covers everything training reads:

    tokens      num_tokens ids (uint16/uint32), each example's rendered conversation in
                file order, nothing added between them
    loss mask   num_tokens bytes (uint8): 1 where the token is a label (an assistant turn's
                content and its closing eos), 0 elsewhere
    offsets     after zero padding to a multiple of 8 bytes, num_examples + 1 little-endian
                int64: example i is tokens[offsets[i]:offsets[i + 1]]

The writer appends chunk by chunk, so no stage ever holds a whole split's tokens; the reader
maps the file and copies out only what is indexed. Both sides live here because the data and
training packages may not import each other.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from common.errors import StageError
from common.template import format_example

FORMAT = "shipyard-tokens-v1"
CHAT_FORMAT = "shipyard-tokens-v2"
TOKENS_SUFFIX = ".tokens.bin"
HEADER_SUFFIX = ".tokens.json"
_DTYPES = ("uint16", "uint32")
_ENCODE_BATCH = 4096  # texts per call into the Rust tokenizer


def tokens_name(split: str) -> str:
    return f"{split}{TOKENS_SUFFIX}"


def header_name(split: str) -> str:
    return f"{split}{HEADER_SUFFIX}"


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    """uint16 while every id (0 .. vocab_size-1) fits in it, else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def example_token_stream(tokenizer: Any, examples: Sequence[tuple[str, str]]) -> list[int]:
    """The training stream of `examples`: per example ``bos + ids + eos`` (ids of the template
    text without special tokens). The Rust tokenizer encodes the batch when there is one; it
    gives the same ids as ``tokenizer.encode(text, add_special_tokens=False)`` per text."""
    texts = [format_example(prompt, response, eos_token="") for prompt, response in examples]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # in batches: an Encoding object is about a kilobyte
        encoded = [e.ids for start in range(0, len(texts), _ENCODE_BATCH)
                   for e in backend.encode_batch_fast(texts[start:start + _ENCODE_BATCH],
                                                      add_special_tokens=False)]
    else:
        encoded = [tokenizer.encode(text, add_special_tokens=False) for text in texts]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    stream: list[int] = []
    for ids in encoded:
        stream += bos
        stream += ids
        stream.append(tokenizer.eos_token_id)
    return stream


@dataclass(frozen=True)
class TokenHeader:
    format: str
    dtype: str  # "uint16" or "uint32", little-endian
    num_tokens: int
    num_examples: int
    vocab_size: int  # len(tokenizer): every id is below it
    tokenizer_digest: str  # common.digests.sha256_tree of the tokenizer directory
    # v2 only (None, and absent from the file, in v1): how many mask bytes are 1
    num_loss_tokens: int | None = None

    def to_bytes(self) -> bytes:
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        return (json.dumps(fields, indent=2, sort_keys=True) + "\n").encode()


class TokenFileWriter:
    """Appends token ids to ``directory/<split>.tokens.bin`` and writes the header on close.

    ``digests`` (file name -> sha256 of both files) is set once the writer is closed; the bin
    file's digest is computed from the bytes as they are written, never by reading back."""

    def __init__(self, directory: Path, split: str, vocab_size: int, tokenizer_digest: str):
        self.directory, self.split = directory, split
        self.vocab_size, self.tokenizer_digest = vocab_size, tokenizer_digest
        self.dtype = token_dtype(vocab_size)
        self.num_tokens = self.num_examples = 0
        self.digests: dict[str, str] = {}
        self._sha = hashlib.sha256()
        self._handle = open(directory / tokens_name(split), "wb")  # noqa: SIM115 (closed in close)

    def append(self, stream: Sequence[int], num_examples: int) -> None:
        ids = np.asarray(stream, dtype=np.int64)
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"token id outside [0, {self.vocab_size}) in the {self.split} "
                             "stream: the tokenizer and its vocabulary size disagree")
        data = ids.astype(self.dtype).tobytes()
        self._handle.write(data)
        self._sha.update(data)
        self.num_tokens += int(ids.size)
        self.num_examples += num_examples

    def close(self) -> dict[str, str]:
        self._handle.close()
        header = TokenHeader(FORMAT, self.dtype.name, self.num_tokens, self.num_examples,
                             self.vocab_size, self.tokenizer_digest)
        header_bytes = header.to_bytes()
        (self.directory / header_name(self.split)).write_bytes(header_bytes)
        self.digests = {tokens_name(self.split): self._sha.hexdigest(),
                        header_name(self.split): hashlib.sha256(header_bytes).hexdigest()}
        return self.digests

    def __enter__(self) -> TokenFileWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if not self._handle.closed:
            self._handle.close()  # on error: no header, so the file is never read as complete


def read_header(directory: Path, split: str, formats: Sequence[str] = (FORMAT,)
                ) -> TokenHeader:
    """The split's header, refused unless its format is one of `formats`."""
    path = directory / header_name(split)
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
        header = TokenHeader(**fields)
    except (OSError, ValueError, TypeError) as exc:
        raise _invalid(path, f"no readable header ({type(exc).__name__}: {exc})") from exc
    if header.format not in formats or header.dtype not in _DTYPES:
        raise _invalid(path, f"format {header.format!r} / dtype {header.dtype!r}, expected "
                             f"one of {list(formats)} with one of {list(_DTYPES)}")
    if (header.format == CHAT_FORMAT) != (header.num_loss_tokens is not None):
        raise _invalid(path, "num_loss_tokens is set exactly in chat (v2) headers")
    return header


def open_tokens(directory: Path, split: str) -> tuple[np.ndarray[Any, Any], TokenHeader]:
    """The split's token stream as a read-only memory map (nothing is read until indexed)."""
    header = read_header(directory, split)
    path = directory / tokens_name(split)
    dtype = np.dtype(header.dtype).newbyteorder("<")
    size = path.stat().st_size if path.is_file() else -1
    if size != header.num_tokens * dtype.itemsize:
        found = "missing" if size < 0 else f"{size:,} bytes"
        raise _invalid(path, f"{found}, but its header promises {header.num_tokens:,} tokens "
                             f"of {header.dtype} ({header.num_tokens * dtype.itemsize:,} bytes)")
    if header.num_tokens == 0:  # numpy cannot map an empty file
        return np.zeros(0, dtype=dtype), header
    return np.memmap(path, dtype=dtype, mode="r", shape=(header.num_tokens,)), header


class ChatTokenFileWriter:
    """Writes a v2 (chat) token file: ``append`` whole examples (ids and loss mask), then
    ``close``. Tokens go to the .bin file as they come; the mask bytes wait in a temporary
    sibling file and the offsets in memory (8 bytes an example) until `close` appends them."""

    def __init__(self, directory: Path, split: str, vocab_size: int, tokenizer_digest: str):
        self.directory, self.split = directory, split
        self.vocab_size, self.tokenizer_digest = vocab_size, tokenizer_digest
        self.dtype = token_dtype(vocab_size)
        self.num_loss_tokens = 0
        self.offsets = array("q", [0])
        self.digests: dict[str, str] = {}
        self._sha = hashlib.sha256()
        self._mask_path = directory / f".{tokens_name(split)}.mask-part"
        self._handle = open(directory / tokens_name(split), "wb")  # noqa: SIM115 (closed in close)
        self._mask = open(self._mask_path, "w+b")  # noqa: SIM115 (closed in close)

    def append(self, examples: Sequence[tuple[Sequence[int], Sequence[int]]]) -> None:
        """`examples`: (ids, loss_mask) per example, the two of equal length."""
        for example_ids, example_mask in examples:
            if len(example_ids) != len(example_mask):
                raise ValueError(f"{len(example_ids)} ids but {len(example_mask)} mask values "
                                 f"in the {self.split} split")
            self.offsets.append(self.offsets[-1] + len(example_ids))
        ids = np.asarray([t for example, _ in examples for t in example], dtype=np.int64)
        mask = np.asarray([m for _, example in examples for m in example], dtype=np.uint8)
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"token id outside [0, {self.vocab_size}) in the {self.split} "
                             "stream: the tokenizer and its vocabulary size disagree")
        if mask.size and int(mask.max()) > 1:
            raise ValueError(f"a loss mask value other than 0/1 in the {self.split} split")
        data = ids.astype(self.dtype).tobytes()
        self._handle.write(data)
        self._sha.update(data)
        self._mask.write(mask.tobytes())
        self.num_loss_tokens += int(mask.sum())

    def close(self) -> dict[str, str]:
        self._mask.seek(0)
        while block := self._mask.read(1 << 20):
            self._write(block)
        self._mask.close()
        os.unlink(self._mask_path)
        num_tokens, num_examples = self.offsets[-1], len(self.offsets) - 1
        self._write(bytes(-(num_tokens * (self.dtype.itemsize + 1)) % 8))
        self._write(np.asarray(self.offsets, dtype="<i8").tobytes())
        self._handle.close()
        header = TokenHeader(CHAT_FORMAT, self.dtype.name, num_tokens, num_examples,
                             self.vocab_size, self.tokenizer_digest, self.num_loss_tokens)
        header_bytes = header.to_bytes()
        (self.directory / header_name(self.split)).write_bytes(header_bytes)
        self.digests = {tokens_name(self.split): self._sha.hexdigest(),
                        header_name(self.split): hashlib.sha256(header_bytes).hexdigest()}
        return self.digests

    def _write(self, data: bytes) -> None:
        self._handle.write(data)
        self._sha.update(data)

    def __enter__(self) -> ChatTokenFileWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if not self._handle.closed:
            self._handle.close()  # on error: no header, so the file is never read as complete
        if not self._mask.closed:
            self._mask.close()
            self._mask_path.unlink(missing_ok=True)


@dataclass(frozen=True)
class ChatTokens:
    """A v2 token file, memory-mapped: example i is ``tokens[offsets[i]:offsets[i + 1]]``
    and ``loss_mask`` (uint8) says which of those tokens are labels."""

    tokens: np.ndarray[Any, Any]
    loss_mask: np.ndarray[Any, Any]
    offsets: np.ndarray[Any, Any]  # (num_examples + 1,) int64
    header: TokenHeader


def open_chat_tokens(directory: Path, split: str) -> ChatTokens:
    """The split's v2 token file as three read-only memory maps (nothing read until indexed)."""
    header = read_header(directory, split, formats=(CHAT_FORMAT,))
    path = directory / tokens_name(split)
    dtype = np.dtype(header.dtype).newbyteorder("<")
    mask_start = header.num_tokens * dtype.itemsize
    offsets_start = mask_start + header.num_tokens + (-(mask_start + header.num_tokens) % 8)
    expected = offsets_start + 8 * (header.num_examples + 1)
    size = path.stat().st_size if path.is_file() else -1
    if size != expected:
        found = "missing" if size < 0 else f"{size:,} bytes"
        raise _invalid(path, f"{found}, but its header promises {header.num_tokens:,} tokens, "
                             f"their loss mask and {header.num_examples:,} example offsets "
                             f"({expected:,} bytes)")
    offsets = np.memmap(path, dtype="<i8", mode="r", offset=offsets_start,
                        shape=(header.num_examples + 1,))
    if offsets[0] != 0 or offsets[-1] != header.num_tokens or np.any(np.diff(offsets) <= 0):
        raise _invalid(path, "its example offsets do not cut the tokens into non-empty examples")
    if header.num_tokens == 0:  # numpy cannot map an empty section
        empty = np.zeros(0, dtype=dtype)
        return ChatTokens(empty, np.zeros(0, dtype=np.uint8), np.array(offsets), header)
    tokens = np.memmap(path, dtype=dtype, mode="r", shape=(header.num_tokens,))
    mask = np.memmap(path, dtype=np.uint8, mode="r", offset=mask_start,
                     shape=(header.num_tokens,))
    return ChatTokens(tokens, mask, offsets, header)


def _invalid(path: Path, reason: str) -> StageError:
    return StageError(
        "TOKEN_FILE_INVALID",
        f"token file {path}: {reason}. It is written by validate_data next to the split; "
        "re-run validate_data and do not edit its outputs.",
    )
