"""The packed token file: the training token stream of one split, written by validate_data,
memory-mapped by train.

    <split>.tokens.bin    the stream as a flat little-endian array (uint16 when every id fits,
                          else uint32): for each example, in file order,
                          ``bos + encode(format_example(prompt, response, "")) + eos``
    <split>.tokens.json   the header: format, dtype, token and example counts, vocabulary size
                          and the digest of the tokenizer that wrote it

The writer appends chunk by chunk, so no stage ever holds a whole split's tokens; the reader
maps the file and copies out only what is indexed. Both sides live here because the data and
training packages may not import each other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from common.errors import StageError
from common.template import format_example

FORMAT = "shipyard-tokens-v1"
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
        header_bytes = (json.dumps(asdict(header), indent=2, sort_keys=True) + "\n").encode()
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


def read_header(directory: Path, split: str) -> TokenHeader:
    path = directory / header_name(split)
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
        header = TokenHeader(**fields)
    except (OSError, ValueError, TypeError) as exc:
        raise _invalid(path, f"no readable header ({type(exc).__name__}: {exc})") from exc
    if header.format != FORMAT or header.dtype not in _DTYPES:
        raise _invalid(path, f"format {header.format!r} / dtype {header.dtype!r}, expected "
                             f"{FORMAT!r} with one of {list(_DTYPES)}")
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


def _invalid(path: Path, reason: str) -> StageError:
    return StageError(
        "TOKEN_FILE_INVALID",
        f"token file {path}: {reason}. It is written by validate_data next to the split; "
        "re-run validate_data and do not edit its outputs.",
    )
