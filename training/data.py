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
from common.token_file import example_token_stream, header_name, open_tokens, tokens_name

# What training reads from a dataset directory; their digests are the run's data provenance.
TRAIN_SPLIT, VALIDATION_SPLIT, TOKENIZER_DIR = "train.jsonl", "validation.jsonl", "tokenizer"
TOKENIZED_SPLITS = ("train", "validation")


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
    if tokenizer_digest is not None and header.tokenizer_digest != tokenizer_digest:
        raise StageError(
            "TOKEN_FILE_INVALID",
            f"token file {dataset_dir / tokens_name(split)}: written with tokenizer "
            f"{header.tokenizer_digest}, but {dataset_dir / TOKENIZER_DIR} is "
            f"{tokenizer_digest}. Re-run validate_data; do not mix files of two runs.",
        )
    return TokenWindows(tokens, seq_len, f"the {split} token file")


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
    """Which windows step `s` trains on, for a fixed global batch and any world size."""

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
