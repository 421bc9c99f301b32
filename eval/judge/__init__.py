"""LLM-as-judge against any OpenAI-compatible chat endpoint.

  prompts      versioned prompt files (prompts/*.txt, a VERSION line, ${field} slots)
  parsing      strict verdict parsing and G-Eval-style expected scores from logprobs
  cache        on-disk judge-call cache keyed by (judge model, prompt, input, outputs)
  client       bounded-concurrency HTTP client: timeouts, retries with backoff, usage
  pairwise     candidate vs champion in both orders; position consistency
  rubric       single-answer grading against the reference answer
  calibration  the reference-labelled pair set, agreement and Cohen's kappa
  run          everything above for one evaluation, summarised as `JudgeReport`
"""
