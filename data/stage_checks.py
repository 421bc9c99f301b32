"""Everything the data stage (data/stage.py) checks before it reads any data: the config's
fields, the split locations, and an output directory that publishing would not destroy."""

from __future__ import annotations

from pathlib import Path

from common.errors import StageError
from data.config import SPLITS, DataConfig
from data.io_location import check_split_location, is_uri, resolve_location
from data.tokenizer import MIN_VOCAB_SIZE


def check_config(config: DataConfig, output_dir: Path) -> dict[str, str]:
    """Everything that can be checked without reading the data. Returns split -> location."""
    if config.prompt_field == config.response_field:
        raise StageError(
            "CONFIG_INVALID",
            f"data.prompt_field and data.response_field are both {config.prompt_field!r}: "
            "point them at two different columns.",
        )
    if config.base_model_dir is None and config.tokenizer_vocab_size < MIN_VOCAB_SIZE:
        raise StageError(
            "CONFIG_INVALID",
            f"data.tokenizer_vocab_size={config.tokenizer_vocab_size}: a byte-level BPE needs "
            f"at least {MIN_VOCAB_SIZE} (256 bytes + special tokens). Raise it.",
        )
    if config.base_model_dir is not None and not base_model_path(config).is_dir():
        raise StageError(
            "CONFIG_INVALID",
            f"data.base_model_dir={config.base_model_dir!r}: no directory at "
            f"{base_model_path(config)}. Point it at a local model directory (relative paths "
            "resolve against the project root) or unset it to train a tokenizer.",
        )
    locations = {split: config.split_paths()[split] for split in SPLITS}
    for split, location in locations.items():
        check_split_location(split, location)
    _check_output_dir(output_dir, config, locations)
    return locations


def base_model_path(config: DataConfig) -> Path:
    assert config.base_model_dir is not None
    return Path(resolve_location(config.base_model_dir))


def _check_output_dir(output_dir: Path, config: DataConfig, locations: dict[str, str]) -> None:
    # Publishing replaces output_dir wholesale; refuse if that would delete our own inputs.
    inputs = [Path(resolve_location(loc)) for loc in locations.values() if not is_uri(loc)]
    if config.base_model_dir is not None:
        inputs.append(base_model_path(config))
    for path in inputs:
        if path.resolve().is_relative_to(output_dir):
            raise StageError(
                "CONFIG_INVALID",
                f"output directory {output_dir} contains the input {path}; publishing would "
                "replace it. Write the validated dataset somewhere else.",
            )
