"""The lm-eval task suite: templates/ (YAML), data/ (JSONL built by `build`), `suite` (specs
and rendering for a run or for the plain lm_eval CLI)."""
