"""Shipyard's eval stage, Flyte-free: lm-eval on a local task suite, an LLM judge, a gate.

Modules:
  suite/      the shipped lm-eval task suite (YAML templates + JSONL) and its builder
  harness     runs the suite through lm-eval (in-process HF model or an OpenAI-compatible
              `/v1/completions` endpoint) and keeps per-sample results keyed by doc hash
  judge/      LLM-as-judge: client, prompts, pairwise and rubric grading, calibration
  stats       paired statistics (scipy) used by the gate
  gate        the promotion decision
  report      JSON + HTML rendering of the report
  stage       `run_eval`: everything above in order, given running endpoints
  champion    the champion baseline: found by its alias, verified by registry.verify_model
  engines     the engines the stage starts for the candidate, the champion and the judge
  tracking    metrics and the report in MLflow
  summary     `EvalSummary`, the typed result the Flyte task converts to `EvalReport`
  run         `evaluate_model`: champion + engines + run_eval + MLflow -> EvalSummary
"""
