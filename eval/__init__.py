"""Shipyard's eval stage, Flyte-free: lm-eval on a local task suite, an LLM judge, a gate.

Modules:
  tasks/      the shipped lm-eval task suite (YAML templates + JSONL) and its builder
  harness     runs the suite through lm-eval (in-process HF model or an OpenAI-compatible
              `/v1/completions` endpoint) and keeps per-sample results keyed by doc hash
  judge/      LLM-as-judge: client, prompts, pairwise and rubric grading, calibration
  stats       paired statistics (scipy) used by the gate
  gate        the promotion decision
  report      JSON + HTML rendering of the report
  stage       `run_eval`: everything above in order
"""
