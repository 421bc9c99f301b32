"""Data stage: shipped corpus generator, Great Expectations validation, tokenizer."""
