"""Training error codes no other test raised: a base model that cannot be trained from, a
split too small for one sequence, and dataset files that are not the ones validated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from common.errors import StageError
from common.settings import PROJECT_ROOT
from common.template import format_example
from data.tokenizer import EOS_TOKEN, train_bpe_tokenizer
from tasks.train import verify_dataset_files
from tests.training.conftest import validated_dataset
from training.config import TrainConfig
from training.data import pack_examples
from training.model import build_model

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    lines = (PROJECT_ROOT / "data/corpus/train.jsonl").read_text().splitlines()[:200]
    rows = [json.loads(line) for line in lines]
    return train_bpe_tokenizer(
        [format_example(r["instruction"], r["response"], EOS_TOKEN) for r in rows],
        vocab_size=300,
    )


def _save_llama(out: Path, vocab_size: int) -> Path:
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=256)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def test_base_model_dir_without_config(tmp_path: Path, tokenizer: PreTrainedTokenizerFast
                                       ) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    config = TrainConfig(base_model_dir=str(tmp_path))
    with pytest.raises(StageError) as info:
        build_model(config, tokenizer)
    assert info.value.code == "TRAIN_BASE_MODEL_INVALID"
    assert "config.json" in info.value.message


def test_base_model_vocabulary_smaller_than_the_tokenizer(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    base = _save_llama(tmp_path / "base", vocab_size=len(tokenizer) - 1)
    with pytest.raises(StageError) as info:
        build_model(TrainConfig(base_model_dir=str(base)), tokenizer)
    assert info.value.code == "TRAIN_BASE_MODEL_INVALID"
    assert "data.base_model_dir" in info.value.message  # says how to fix it


def test_split_smaller_than_one_sequence(tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(StageError) as info:
        pack_examples([("hi", "ok")], tokenizer, seq_len=128)
    assert info.value.code == "TRAIN_DATA_TOO_SMALL"
    assert "seq_len" in info.value.message
    # Enough text for one window packs into exactly that shape: (num_windows, seq_len + 1).
    assert pack_examples([("hi", "ok")] * 50, tokenizer, seq_len=8).shape[1] == 9




@pytest.mark.parametrize("tamper", ["edit", "delete"])
def test_train_refuses_dataset_files_it_did_not_validate(tmp_path: Path, tamper: str) -> None:
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text('{"prompt": "q", "response": "a"}\n')
    dataset = validated_dataset(tmp_path)
    verify_dataset_files(tmp_path, dataset)  # untouched: accepted
    if tamper == "edit":
        (tmp_path / "validation.jsonl").write_text('{"prompt": "q", "response": "b"}\n')
    else:
        (tmp_path / "train.jsonl").unlink()
    with pytest.raises(StageError) as info:
        verify_dataset_files(tmp_path, dataset)
    assert info.value.code == "TRAIN_DATASET_DIGEST_MISMATCH"
    assert "validate_data" in info.value.message
