"""Tests of the data stage: corpus generator, readers, tokenizer, GX validation, Flyte task."""
