"""Token windows and the deterministic batch schedule.

Examples are formatted with the shared template, tokenized, joined with EOS and cut into
windows of ``seq_len + 1`` tokens (inputs are the first ``seq_len``, labels the last), so
every sequence has exactly ``seq_len`` loss tokens and no padding. That makes the mean loss of
a micro-batch comparable across ranks: DDP's gradient average equals the global-batch mean.

validate_data writes that token stream once per split (`common.token_file`); training maps
the file and copies out only the windows a step indexes (`TokenWindows`), so a corpus never
has to fit in memory.

The batch of step ``s`` is a pure function of (seed, s): the data position of a resumed run is
its step counter, nothing else.

Chat datasets (`data.format: chat`, token file v2) are not packed: each sequence is one
example (`ChatExamples`), right-padded to the longest example of its micro-batch, with labels
only on the assistant tokens the loss mask marks. Packing would need attention boundaries
between the examples of a window (a block-diagonal mask or varlen attention) that the SDPA
path here does not have: packed conversations would attend to each other's tokens, and a
turn would be learned in the context of an unrelated conversation. The schedule then indexes
examples instead of windows; the loss is a mean over loss tokens, not sequences (see
training/loop.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from common.digests import sha256_file, sha256_tree
from common.errors import StageError
from common.token_file import (
    CHAT_FORMAT,
    FORMAT,
    ChatTokens,
    example_token_stream,
    header_name,
    open_chat_tokens,
    open_tokens,
    read_header,
    tokens_name,
)

# What training reads from a dataset directory; their digests are the run's data provenance.
TRAIN_SPLIT, VALIDATION_SPLIT, TOKENIZER_DIR = "train.jsonl", "validation.jsonl", "tokenizer"
TOKENIZED_SPLITS = ("train", "validation")
IGNORE_INDEX = -100  # label of a position that is not a loss token (F.cross_entropy's default)


def dataset_digests(dataset_dir: Path) -> dict[str, str]:
    """sha256 of each split file and token file training reads, and `sha256_tree` of the
    tokenizer: the values validate_data records (`split_digests`, `token_file_digests`,
    `tokenizer_digest`)."""
    names = [TRAIN_SPLIT, VALIDATION_SPLIT]
    names += [name(split) for split in TOKENIZED_SPLITS for name in (tokens_name, header_name)]
    return {**{name: sha256_file(dataset_dir / name) for name in names},
            TOKENIZER_DIR: sha256_tree(dataset_dir / TOKENIZER_DIR)}


class TokenWindows:
    """(num_windows, seq_len + 1) token windows over a 1-D token stream, cut lazily.

    Window i is tokens ``[i * (seq_len + 1), (i + 1) * (seq_len + 1))``; the tail shorter than
    a window is dropped. Indexing with a (B,) tensor of window indices copies only those B
    windows out of the stream (a memory map stays on disk) and returns them as int64."""

    def __init__(self, tokens: np.ndarray[Any, Any], seq_len: int, source: str):
        window = seq_len + 1
        num_windows = len(tokens) // window
        if num_windows == 0:
            raise StageError(
                "TRAIN_DATA_TOO_SMALL",
                f"{source} holds {len(tokens)} tokens, fewer than one sequence of "
                f"seq_len+1={window}. Lower train.seq_len or add data.",
            )
        self._windows = tokens[: num_windows * window].reshape(num_windows, window)  # a view

    def __len__(self) -> int:
        return int(self._windows.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self._windows.shape[0]), int(self._windows.shape[1])

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        """(B,) int64 window indices -> (B, seq_len + 1) int64 token ids."""
        rows = self._windows[indices.numpy()]  # fancy indexing copies just these rows
        return torch.from_numpy(rows.astype(np.int64))


def load_token_windows(dataset_dir: Path, split: str, seq_len: int,
                       tokenizer_digest: str | None = None) -> TokenWindows:
    """The split's token file as windows. `tokenizer_digest`, when given, must be the one the
    file was written with (a token file from another tokenizer would train on wrong ids)."""
    tokens, header = open_tokens(dataset_dir, split)
    _check_tokenizer(dataset_dir, split, header.tokenizer_digest, tokenizer_digest)
    return TokenWindows(tokens, seq_len, f"the {split} token file")


def _check_tokenizer(dataset_dir: Path, split: str, written_with: str,
                     tokenizer_digest: str | None) -> None:
    if tokenizer_digest is not None and written_with != tokenizer_digest:
        raise StageError(
            "TOKEN_FILE_INVALID",
            f"token file {dataset_dir / tokens_name(split)}: written with tokenizer "
            f"{written_with}, but {dataset_dir / TOKENIZER_DIR} is "
            f"{tokenizer_digest}. Re-run validate_data; do not mix files of two runs.",
        )


def is_chat_dataset(dataset_dir: Path) -> bool:
    """Whether validate_data wrote chat (v2) token files here (its train header says so)."""
    return read_header(dataset_dir, "train", formats=(FORMAT, CHAT_FORMAT)).format == CHAT_FORMAT


@dataclass(frozen=True)
class ChatBatch:
    """Chat examples as one padded batch; position j predicts token j + 1 of its example."""

    input_ids: torch.Tensor  # (B, T) int64, right-padded with the pad id
    labels: torch.Tensor  # (B, T) int64: the next token where it is a loss token, else -100
    attention_mask: torch.Tensor  # (B, T) int64: 1 on the example's tokens, 0 on padding

    @property
    def num_loss_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


class ChatExamples:
    """The examples of a chat (v2) token file, one per sequence, cut lazily from the memory
    maps. Indexing with a (B,) tensor of example indices builds a `ChatBatch` as long as the
    longest of those examples (minus one: the last token is only a target)."""

    def __init__(self, tokens: ChatTokens, seq_len: int, pad_token_id: int, source: str):
        self._tokens, self._mask, self._offsets = tokens.tokens, tokens.loss_mask, tokens.offsets
        self.pad_token_id = pad_token_id
        if len(self) == 0:
            raise StageError("TRAIN_DATA_TOO_SMALL", f"{source} holds no examples. Add data "
                             "and re-run validate_data.")
        self.longest = int(np.diff(self._offsets).max())  # tokens of the longest example
        if self.longest - 1 > seq_len:
            raise StageError(
                "TRAIN_EXAMPLE_TOO_LONG",
                f"{source}: its longest example has {self.longest} tokens, more than "
                f"train.seq_len+1={seq_len + 1}; chat examples are never truncated (a cut "
                "conversation would teach a cut answer). Raise train.seq_len to at least "
                f"{self.longest - 1} (within the model's context), or lower "
                "data.max_example_tokens to that and re-run validate_data.",
            )

    def __len__(self) -> int:
        return int(self._offsets.shape[0]) - 1

    def __getitem__(self, indices: torch.Tensor) -> ChatBatch:
        """(B,) int64 example indices -> the padded batch of those examples, in that order."""
        starts = [int(self._offsets[i]) for i in indices.tolist()]
        ends = [int(self._offsets[i + 1]) for i in indices.tolist()]
        width = max(end - start for start, end in zip(starts, ends, strict=True)) - 1
        input_ids = torch.full((len(starts), width), self.pad_token_id, dtype=torch.int64)
        labels = torch.full((len(starts), width), IGNORE_INDEX, dtype=torch.int64)
        attention_mask = torch.zeros((len(starts), width), dtype=torch.int64)
        for row, (start, end) in enumerate(zip(starts, ends, strict=True)):
            ids = torch.from_numpy(self._tokens[start:end].astype(np.int64))  # (n,)
            is_label = torch.from_numpy(self._mask[start + 1:end].astype(bool))  # (n - 1,)
            length = end - start - 1
            input_ids[row, :length] = ids[:-1]
            labels[row, :length] = torch.where(is_label, ids[1:], IGNORE_INDEX)
            attention_mask[row, :length] = 1
        return ChatBatch(input_ids, labels, attention_mask)


def load_chat_examples(dataset_dir: Path, split: str, seq_len: int, pad_token_id: int,
                       tokenizer_digest: str | None = None) -> ChatExamples:
    """The split's chat token file as examples; `tokenizer_digest` as `load_token_windows`."""
    tokens = open_chat_tokens(dataset_dir, split)
    _check_tokenizer(dataset_dir, split, tokens.header.tokenizer_digest, tokenizer_digest)
    return ChatExamples(tokens, seq_len, pad_token_id, f"the {split} token file")


def load_examples(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [(row["prompt"], row["response"]) for row in rows]


def pack_examples(
    examples: list[tuple[str, str]], tokenizer: PreTrainedTokenizerBase, seq_len: int
) -> TokenWindows:
    """Windows of the token stream of `examples`, built in memory (small inputs, tests and
    benchmarks; training reads the token file validate_data wrote)."""
    stream = np.asarray(example_token_stream(tokenizer, examples), dtype=np.int64)
    return TokenWindows(stream, seq_len, "the split")


@dataclass(frozen=True)
class BatchSchedule:
    """Which windows step `s` trains on, for a fixed global batch and any world size (for a
    chat dataset: which examples; `num_windows` is then the number of examples)."""

    num_windows: int
    global_batch_size: int
    seed: int

    def global_indices(self, step: int) -> torch.Tensor:
        """(global_batch_size,) window indices of 0-based step `step`.

        Epoch e is a permutation seeded by (seed, e); steps walk through it in order, and a
        batch that would straddle two epochs takes the tail of one and the head of the next.
        """
        start = step * self.global_batch_size
        out: list[int] = []
        while len(out) < self.global_batch_size:
            epoch, offset = divmod(start + len(out), self.num_windows)
            perm = self._permutation(epoch)
            take = min(self.global_batch_size - len(out), self.num_windows - offset)
            out.extend(perm[offset : offset + take].tolist())
        return torch.tensor(out, dtype=torch.int64)

    def rank_micro_batches(
        self, step: int, rank: int, world_size: int, micro_batch_size: int
    ) -> list[torch.Tensor]:
        """This rank's contiguous slice of the global batch, cut into micro-batches."""
        indices = self.global_indices(step)
        per_rank = self.global_batch_size // world_size
        mine = indices[rank * per_rank : (rank + 1) * per_rank]
        return list(mine.split(micro_batch_size))

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_windows, generator=generator)
