"""The packed token file validate_data writes and train memory-maps: it round-trips, its
windows are exactly what the in-memory packing built before, and train refuses one that is
not the file validation vouched for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from common.digests import sha256_file, sha256_tree
from common.errors import StageError
from common.template import format_example
from common.token_file import TokenFileWriter, header_name, open_tokens, tokens_name
from tasks.contracts import ValidatedDataset
from tasks.train import verify_dataset_files
from tests.training.conftest import validated_dataset
from training.data import TokenWindows, load_examples, load_token_windows

DIGEST = "d" * 64


def _write(directory: Path, chunks: list[list[int]], vocab_size: int) -> dict[str, str]:
    with TokenFileWriter(directory, "train", vocab_size, DIGEST) as writer:
        for chunk in chunks:
            writer.append(chunk, num_examples=1)
        return writer.close()


@pytest.mark.unit
@pytest.mark.parametrize("vocab_size, dtype", [(512, "uint16"), (65536, "uint16"),
                                               (65537, "uint32")])
def test_chunks_written_one_by_one_read_back_as_one_stream(
    tmp_path: Path, vocab_size: int, dtype: str
) -> None:
    chunks = [[1, 5, vocab_size - 1, 2], [], [1, 7, 2]]
    digests = _write(tmp_path, chunks, vocab_size)
    tokens, header = open_tokens(tmp_path, "train")
    assert tokens.tolist() == [t for chunk in chunks for t in chunk]
    assert (header.dtype, header.num_tokens, header.num_examples) == (dtype, 7, 3)
    assert header.tokenizer_digest == DIGEST
    assert digests == {name: sha256_file(tmp_path / name)
                       for name in (tokens_name("train"), header_name("train"))}


@pytest.mark.unit
def test_an_id_outside_the_vocabulary_is_refused_while_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        _write(tmp_path, [[1, 512]], vocab_size=512)


@pytest.mark.unit
def test_a_truncated_or_headerless_token_file_is_refused_by_name(tmp_path: Path) -> None:
    _write(tmp_path, [[1, 2, 3, 4]], vocab_size=512)
    path = tmp_path / tokens_name("train")
    path.write_bytes(path.read_bytes()[:-2])  # one uint16 token short
    with pytest.raises(StageError) as info:
        open_tokens(tmp_path, "train")
    assert info.value.code == "TOKEN_FILE_INVALID"
    assert "re-run validate_data" in info.value.message
    (tmp_path / header_name("train")).unlink()
    with pytest.raises(StageError) as info:
        open_tokens(tmp_path, "train")
    assert info.value.code == "TOKEN_FILE_INVALID"


@pytest.mark.unit
def test_windows_are_cut_lazily_and_returned_as_int64(tmp_path: Path) -> None:
    _write(tmp_path, [list(range(1, 12))], vocab_size=512)  # 11 tokens: 2 windows of 5
    windows = load_token_windows(tmp_path, "train", seq_len=4, tokenizer_digest=DIGEST)
    assert len(windows) == 2 and windows.shape == (2, 5)
    batch = windows[torch.tensor([1, 0, 1])]
    assert batch.dtype == torch.int64
    assert batch.tolist() == [[6, 7, 8, 9, 10], [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    with pytest.raises(StageError) as info:  # a token file of another tokenizer
        load_token_windows(tmp_path, "train", seq_len=4, tokenizer_digest="e" * 64)
    assert info.value.code == "TOKEN_FILE_INVALID"


def _old_pack_examples(examples: list[tuple[str, str]], tokenizer: object,
                       seq_len: int) -> torch.Tensor:
    """training.data.pack_examples as it was before the token file (one encode per example)."""
    stream: list[int] = []
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []  # type: ignore[attr-defined]
    for prompt, response in examples:
        text = format_example(prompt, response, eos_token="")
        stream.extend(bos + tokenizer.encode(text, add_special_tokens=False))  # type: ignore[attr-defined]
        stream.append(tokenizer.eos_token_id)  # type: ignore[attr-defined]
    window = seq_len + 1
    num_windows = len(stream) // window
    return torch.tensor(stream[: num_windows * window], dtype=torch.int64).view(num_windows,
                                                                              window)


@pytest.mark.integration
@pytest.mark.parametrize("split", ["train", "validation"])
def test_memory_mapped_windows_equal_the_old_in_memory_packing_on_the_shipped_corpus(
    tiny_dataset_dir: Path, split: str
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dataset_dir / "tokenizer")
    seq_len = 128  # the tiny preset's
    old = _old_pack_examples(load_examples(tiny_dataset_dir / f"{split}.jsonl"), tokenizer,
                             seq_len)
    windows = load_token_windows(tiny_dataset_dir, split, seq_len,
                                 sha256_tree(tiny_dataset_dir / "tokenizer"))
    assert isinstance(windows, TokenWindows) and windows.shape == tuple(old.shape)
    assert torch.equal(windows[torch.arange(len(windows))], old)
    header = json.loads((tiny_dataset_dir / header_name(split)).read_text())
    assert header["dtype"] == "uint16" and header["num_examples"] == (8000 if split == "train"
                                                                      else 500)


def _validated(dataset_dir: Path) -> ValidatedDataset:
    names = [name(split) for split in ("train", "validation")
             for name in (tokens_name, header_name)]
    return validated_dataset(dataset_dir, names)


@pytest.mark.unit
@pytest.mark.parametrize("tamper", ["flip a token", "edit the header", "delete",
                                    "not recorded"])
def test_train_refuses_a_token_file_validation_did_not_vouch_for(tmp_path: Path,
                                                                 tamper: str) -> None:
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text('{"prompt": "q", "response": "a"}\n')
        with TokenFileWriter(tmp_path, split, 512, DIGEST) as writer:
            writer.append([1, 40, 41, 2], num_examples=1)
            writer.close()
    dataset = _validated(tmp_path)
    verify_dataset_files(tmp_path, dataset)  # untouched: accepted
    tokens = tmp_path / tokens_name("train")
    if tamper == "flip a token":
        data = bytearray(tokens.read_bytes())
        data[2] ^= 1
        tokens.write_bytes(bytes(data))
    elif tamper == "edit the header":
        header = tmp_path / header_name("validation")
        header.write_text(header.read_text().replace("uint16", "uint32"))
    elif tamper == "delete":
        tokens.unlink()
    else:  # a token file from elsewhere, dropped next to the validated ones
        shutil.copy(tokens, tmp_path / tokens_name("extra"))
    with pytest.raises(StageError) as info:
        verify_dataset_files(tmp_path, dataset)
    assert info.value.code == "TRAIN_DATASET_DIGEST_MISMATCH"
    assert ".tokens." in info.value.message and "validate_data" in info.value.message

