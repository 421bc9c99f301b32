"""The tokenizer the model trains and serves with: deterministic, lossless, chat-ready."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from common.digests import sha256_tree
from common.errors import StageError
from common.template import format_example, format_prompt
from data.tokenizer import (
    BOS_TOKEN,
    EOS_TOKEN,
    PAD_TOKEN,
    UNK_TOKEN,
    count_example_tokens,
    load_base_tokenizer,
    save_tokenizer,
    train_bpe_tokenizer,
)

pytestmark = pytest.mark.unit

TEXTS = [format_example(f"What is {a} + {a + 1}?", str(2 * a + 1), EOS_TOKEN) for a in range(50)]


def _saved(tokenizer: Any, directory: Path) -> Any:
    save_tokenizer(tokenizer, directory)
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def test_training_twice_gives_byte_identical_files(tmp_path: Path) -> None:
    save_tokenizer(train_bpe_tokenizer(TEXTS, 300), tmp_path / "a")
    save_tokenizer(train_bpe_tokenizer(TEXTS, 300), tmp_path / "b")
    assert sha256_tree(tmp_path / "a") == sha256_tree(tmp_path / "b")


def test_saved_tokenizer_declares_the_special_tokens_the_model_uses(
    corpus_tokenizer: Any, tmp_path: Path
) -> None:
    loaded = _saved(corpus_tokenizer, tmp_path / "tok")
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token, loaded.unk_token) == (
        BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN)
    ids = {loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id, loaded.unk_token_id}
    assert len(ids) == 4 and None not in ids
    assert len(loaded) == 512


def test_formatted_example_starts_with_bos_and_ends_with_one_eos_token(
    corpus_tokenizer: Any,
) -> None:
    ids = corpus_tokenizer(format_example("What is 2 + 3?", "5", EOS_TOKEN))["input_ids"]
    assert ids[0] == corpus_tokenizer.bos_token_id
    assert ids[-1] == corpus_tokenizer.eos_token_id
    assert ids.count(corpus_tokenizer.eos_token_id) == 1
    assert count_example_tokens(corpus_tokenizer, ["What is 2 + 3?"], ["5"]) == [len(ids)]


@pytest.mark.parametrize("text", ["What is 12 * 7?", "Reverse 'zubarok'.",
                                  "Ünïcödé, 中文 and emoji 🚢 never seen in training"])
def test_text_round_trips_exactly(corpus_tokenizer: Any, text: str) -> None:
    ids = corpus_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert corpus_tokenizer.unk_token_id not in ids  # byte-level: nothing is unknown
    assert corpus_tokenizer.decode(ids) == text


def test_chat_template_renders_the_training_prompt(corpus_tokenizer: Any, tmp_path: Path) -> None:
    loaded = _saved(corpus_tokenizer, tmp_path / "tok")
    messages = [{"role": "user", "content": "What is the capital of Fafiria?"}]
    rendered = loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == BOS_TOKEN + format_prompt("What is the capital of Fafiria?")
    # Token ids as vLLM builds them for a chat request equal those of a training prompt.
    chat = loaded.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=True
    )
    prompt_ids = loaded(format_prompt("What is the capital of Fafiria?"))["input_ids"]
    assert list(chat["input_ids"]) == prompt_ids


def test_chat_template_refuses_two_user_messages(corpus_tokenizer: Any) -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(Exception, match="exactly one user message"):
        corpus_tokenizer.apply_chat_template(messages, tokenize=False)


def test_too_small_vocabulary_is_refused() -> None:
    with pytest.raises(StageError, match="tokenizer_vocab_size=100"):
        train_bpe_tokenizer(TEXTS, 100)


def test_base_model_tokenizer_is_loaded_from_a_local_dir(
    corpus_tokenizer: Any, tmp_path: Path
) -> None:
    save_tokenizer(corpus_tokenizer, tmp_path / "base")
    loaded = load_base_tokenizer(tmp_path / "base")
    text = format_example("What is 2 + 3?", "5", EOS_TOKEN)
    assert loaded(text)["input_ids"] == corpus_tokenizer(text)["input_ids"]


def test_base_model_dir_without_tokenizer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StageError) as caught:
        load_base_tokenizer(tmp_path)
    assert caught.value.code == "DATA_TOKENIZER_INVALID"
    assert "data.base_model_dir" in caught.value.message
