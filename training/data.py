"""Token packing and the deterministic batch schedule.

Examples are formatted with the shared template, tokenized, joined with EOS and cut into
windows of ``seq_len + 1`` tokens (inputs are the first ``seq_len``, labels the last), so
every sequence has exactly ``seq_len`` loss tokens and no padding. That makes the mean loss of
a micro-batch comparable across ranks: DDP's gradient average equals the global-batch mean.

The batch of step ``s`` is a pure function of (seed, s): the data position of a resumed run is
its step counter, nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from common.digests import sha256_file, sha256_tree
from common.errors import StageError
from common.template import format_example

# What training reads from a dataset directory; their digests are the run's data provenance.
TRAIN_SPLIT, VALIDATION_SPLIT, TOKENIZER_DIR = "train.jsonl", "validation.jsonl", "tokenizer"


def dataset_digests(dataset_dir: Path) -> dict[str, str]:
    """sha256 of each split file training reads, and `sha256_tree` of the tokenizer: the same
    values validate_data records (`split_digests`, `tokenizer_digest`)."""
    return {
        TRAIN_SPLIT: sha256_file(dataset_dir / TRAIN_SPLIT),
        VALIDATION_SPLIT: sha256_file(dataset_dir / VALIDATION_SPLIT),
        TOKENIZER_DIR: sha256_tree(dataset_dir / TOKENIZER_DIR),
    }


def load_examples(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [(row["prompt"], row["response"]) for row in rows]


def pack_examples(
    examples: list[tuple[str, str]], tokenizer: PreTrainedTokenizerBase, seq_len: int
) -> torch.Tensor:
    """Returns (num_windows, seq_len + 1) int64 token windows."""
    stream: list[int] = []
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    for prompt, response in examples:
        text = format_example(prompt, response, eos_token="")
        stream.extend(bos + tokenizer.encode(text, add_special_tokens=False))
        stream.append(tokenizer.eos_token_id)
    window = seq_len + 1
    num_windows = len(stream) // window
    if num_windows == 0:
        raise StageError(
            "TRAIN_DATA_TOO_SMALL",
            f"the split holds {len(stream)} tokens, fewer than one sequence of seq_len+1="
            f"{window}. Lower train.seq_len or add data.",
        )
    return torch.tensor(stream[: num_windows * window], dtype=torch.int64).view(num_windows, window)


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
