"""The tokenizer of the data stage (data/stage.py): the base model's, or a BPE trained on the
train split streamed through once; and the check that it reloads from disk as train will."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from common.errors import StageError
from common.template import format_example
from data import chat
from data.config import DataConfig
from data.io import SplitReader
from data.stage_checks import base_model_path
from data.tokenizer import EOS_TOKEN, load_base_tokenizer, train_bpe_tokenizer

logger = logging.getLogger(__name__)


def build_tokenizer(config: DataConfig, train: SplitReader) -> PreTrainedTokenizerBase:
    """The base model's tokenizer when configured, else a BPE trained on the train split,
    streamed through once."""
    if config.format == "chat":
        tokenizer = load_base_tokenizer(base_model_path(config), keep_chat_template=True)
        chat.check_chat_template(tokenizer, str(config.base_model_dir))
        return tokenizer
    if config.base_model_dir is not None:
        return load_base_tokenizer(base_model_path(config))
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


def verify_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    # What training will do next: load it from disk. Fail here, not three stages later.
    reloaded = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if reloaded.eos_token is None or not reloaded("ok")["input_ids"]:
        raise StageError(
            "DATA_TOKENIZER_INVALID",
            f"the tokenizer saved to {directory} does not reload with an eos_token; this is a "
            "bug in the data stage, please report it with the config used.",
        )
    return reloaded
