"""`DataConfig`: what the `validate_data` stage reads and the rules it enforces."""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import StageError

SPLITS = ("train", "validation", "eval")
PII_ACTIONS = ("fail", "warn")
# "prompt_response": one prompt and one response column, formatted with the project's template
# (common/template.py) and packed; "chat": a column of messages rendered with the base model's
# own chat template, one example per sequence, loss on assistant tokens only (data/chat.py).
FORMATS = ("prompt_response", "chat")


@dataclass
class DataConfig:
    # Each split is a JSONL or Parquet file: a local path (relative paths resolve against the
    # project root) or an object-store URI (s3://, gs://, abfs:// through fsspec).
    train_path: str = "data/corpus/train.jsonl"
    validation_path: str = "data/corpus/validation.jsonl"
    eval_path: str = "data/corpus/eval.jsonl"
    # Row format, one of FORMATS. "chat" needs `base_model_dir` (its tokenizer's chat template).
    format: str = "prompt_response"
    # Column names holding the prompt and the reference answer ("prompt_response").
    prompt_field: str = "instruction"
    response_field: str = "response"
    # Column holding the conversation ("chat"): a list of {"role", "content"} objects.
    messages_field: str = "messages"
    # Token budget of one formatted example (template + prompt + response + EOS; for chat the
    # whole rendered conversation). Chat examples are never truncated: longer rows are refused.
    max_example_tokens: int = 128
    # Fewest rows a split may have.
    min_rows_per_split: int = 10
    # Tokenizer: trained on the train split (BPE, this vocabulary size) unless
    # `base_model_dir` is set, in which case that model's tokenizer is used as it is.
    tokenizer_vocab_size: int = 512
    base_model_dir: str | None = None
    # The BPE is trained on the first this-many rows of the train split (file order), not on
    # all of it: training cost and memory grow with the distinct words seen, so a bounded
    # sample keeps the stage linear in rows. Validation and the token files still cover every
    # row; any text stays encodable (byte-level). A corpus sorted by topic should be shuffled.
    tokenizer_train_max_rows: int = 100_000
    # What an email address or phone number in the text does: "fail" stops the pipeline,
    # "warn" reports it and goes on.
    pii_action: str = "fail"
    # Bounds on each split file, checked before parsing (hostile or broken input is refused
    # in bounded time and memory): the file's size and one row's size in bytes.
    max_file_bytes: int = 1 << 30
    max_row_bytes: int = 64 << 10
    # The stage streams each split in chunks of at most this many rows (and about
    # `chunk_bytes` bytes of input): memory is bounded by a chunk, not by the split. Results
    # do not depend on it; only speed (fewer, larger chunks) and peak memory do.
    chunk_rows: int = 20_000
    chunk_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if self.pii_action not in PII_ACTIONS:
            raise StageError(
                "CONFIG_INVALID",
                f"data.pii_action={self.pii_action!r}: must be one of {list(PII_ACTIONS)}.",
            )
        if self.format not in FORMATS:
            raise StageError(
                "CONFIG_INVALID",
                f"data.format={self.format!r}: must be one of {list(FORMATS)}.",
            )
        if self.format == "chat" and self.base_model_dir is None:
            raise StageError(
                "CONFIG_INVALID",
                "data.format='chat' needs data.base_model_dir: conversations are rendered with "
                "that model's own tokenizer and chat template. Set it to the local model "
                "directory you fine-tune (the same as train.base_model_dir).",
            )
        for name in ("max_example_tokens", "min_rows_per_split", "tokenizer_vocab_size",
                     "tokenizer_train_max_rows", "max_file_bytes", "max_row_bytes", "chunk_rows",
                     "chunk_bytes"):
            if getattr(self, name) <= 0:
                raise StageError(
                    "CONFIG_INVALID", f"data.{name}={getattr(self, name)}: must be > 0."
                )

    def split_paths(self) -> dict[str, str]:
        return {"train": self.train_path, "validation": self.validation_path,
                "eval": self.eval_path}
