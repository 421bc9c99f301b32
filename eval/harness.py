"""Run the task suite through lm-eval and keep every per-sample result.

Two model paths behind one function (`run_harness`):

  ``hf``                 the model directory loaded in-process as lm-eval's `HFLM`
  ``local-completions``  lm-eval's OpenAI-compatible backend against a server's
                         ``/v1/completions`` (the local engine or vLLM serving the model);
                         the only API backend that scores loglikelihood tasks

Both tokenize with the model directory's tokenizer and send token ids, so the two paths
score exactly the same token sequences (tests check that they agree).

A model with a chat template is prompted through it (`HarnessOptions.apply_chat_template`,
lm-eval's own `apply_chat_template`): generation and multiple-choice contexts become a user
turn plus the assistant header (lm-eval then drops the space before a choice); rolling
log-likelihood (perplexity) has no context and is unchanged.

Each sample is kept with the sha256 of its document's canonical JSON (`doc_hash`): the
candidate's and the champion's results pair by it, whatever order lm-eval ran them in.
The response cache (eval/cache.py, JSON rows, not lm-eval's pickle cache) is keyed by
model digest, model path and request, in one file per (model digest, model path).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from eval.cache import RESPONSE_CACHE_FILE, ResponseCache, install_response_cache
from eval.errors import EvalError
from eval.suite.specs import TASK_SPECS, Suite

logger = logging.getLogger(__name__)

# How the harness reaches the model (eval.model_path).
ModelPath = Literal["hf", "local-completions"]
MODEL_PATHS: tuple[str, ...] = get_args(ModelPath)
# IFEval's instruction-level metrics: lm-eval aggregates them over all instructions of all
# prompts; a sample keeps the share of its prompt's instructions followed.
_PER_INSTRUCTION_METRICS = ("inst_level_strict_acc", "inst_level_loose_acc")
_OFFLINE_ENV = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@dataclass(frozen=True)
class ModelSource:
    """The model to evaluate and how to reach it."""

    # HF model directory: the weights for the hf path, the tokenizer for both paths.
    model_dir: Path
    # model-signing root digest of `model_dir`: keys the response cache.
    digest: str
    path: str = "hf"
    # local-completions: server root URL (``http://127.0.0.1:PORT``) and the model name it
    # serves.
    base_url: str | None = None
    served_model_name: str | None = None


@dataclass(frozen=True)
class HarnessOptions:
    limit_per_task: int | None = None
    batch_size: int = 8
    # local-completions: requests in flight at once.
    num_concurrent: int = 4
    request_timeout_seconds: int = 120
    # Response cache root (one sub-directory per model digest and path); None: no cache.
    cache_dir: Path | None = None
    # hf path: torch device; None picks "cuda" when one is visible, else "cpu".
    device: str | None = None
    # Prompt through the tokenizer's chat template (lm-eval's apply_chat_template), with this
    # system message where the prompt has none (None: the template's own default, if any).
    apply_chat_template: bool = False
    system_instruction: str | None = None
    # Per-task document limits that override `limit_per_task` (None: every document).
    task_limits: dict[str, int | None] = field(default_factory=dict)


@dataclass
class SampleResult:
    task: str
    doc_id: int
    doc_hash: str
    # Per-item values: acc / acc_norm / exact_match are 0 or 1; shipyard_ppl has
    # bits_per_byte, loglikelihood and num_bytes of the one document.
    metrics: dict[str, float]
    # The generated text of generate_until tasks (after lm-eval's filters).
    output: str | None
    doc: dict[str, Any]
    # generate_until tasks: the prompt exactly as the model got it (chat template applied or
    # not). Kept in memory for checks; not written to the report.
    prompt: str | None = None


@dataclass
class HarnessResult:
    model_digest: str
    model_path: str
    # task -> {metric: value, "<metric>_stderr": standard error}
    metrics: dict[str, dict[str, float]]
    samples: dict[str, list[SampleResult]]
    versions: dict[str, str]
    num_samples: dict[str, int]
    wall_seconds: float
    lm_eval_version: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    def by_doc_hash(self, task: str) -> dict[str, SampleResult]:
        return {s.doc_hash: s for s in self.samples.get(task, [])}


def doc_hash(doc: dict[str, Any]) -> str:
    canonical = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def run_harness(source: ModelSource, suite: Suite, options: HarnessOptions) -> HarnessResult:
    if source.path not in MODEL_PATHS:
        raise EvalError("EVAL_CONFIG_INVALID",
                        f"model path {source.path!r}: use one of {list(MODEL_PATHS)}.")
    # The suite is local JSON: never let `datasets`/`huggingface_hub` reach for the network.
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import lm_eval
    from lm_eval.tasks import TaskManager

    started = time.perf_counter()
    lm = _build_lm(source, options)
    cache = None
    if options.cache_dir is not None:
        # Ours, JSON rows (eval/cache.py), never lm-eval's pickle cache (use_cache=None).
        cache = ResponseCache(options.cache_dir / source.digest / source.path
                              / RESPONSE_CACHE_FILE, source.digest, source.path)
        install_response_cache(lm, cache)
    chat = ({"apply_chat_template": True, "system_instruction": options.system_instruction}
            if options.apply_chat_template else {})
    limit, selection = _document_selection(suite, options)
    try:
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(suite.tasks),
            task_manager=TaskManager(include_path=str(suite.include_dir), include_defaults=False),
            limit=limit,
            samples=selection,
            use_cache=None,
            log_samples=True,
            # lm-eval bootstraps only non-mean metrics and gives perplexities "N/A" anyway;
            # `_perplexity_stderr` computes those intervals from the samples instead.
            bootstrap_iters=0,
            # None: lm-eval adds no console handler of its own; its records propagate to the
            # root logger, which the quiet console sends to the run's log file
            verbosity=None,
            **chat,
        )
    finally:
        if cache is not None:
            cache.close()
    if results is None:
        raise EvalError("EVAL_HARNESS_FAILED", "lm-eval returned no results (non-zero rank?).")
    samples = {task: [_sample(task, s) for s in results["samples"][task]] for task in suite.tasks}
    metrics = {task: _task_metrics(results["results"][task], samples[task])
               for task in suite.tasks}
    return HarnessResult(
        model_digest=source.digest,
        model_path=source.path,
        metrics=metrics,
        samples=samples,
        versions={t: str(results["versions"][t]) for t in suite.tasks},
        num_samples={t: len(samples[t]) for t in suite.tasks},
        wall_seconds=time.perf_counter() - started,
        lm_eval_version=str(getattr(lm_eval, "__version__", "")),
        config={"limit_per_task": options.limit_per_task, "batch_size": options.batch_size,
                "task_limits": dict(options.task_limits),
                "chat_template_applied": options.apply_chat_template,
                "system_instruction": options.system_instruction,
                "max_gen_tokens": dict(suite.max_gen_tokens)},
    )


def _document_selection(suite: Suite, options: HarnessOptions
                        ) -> tuple[int | None, dict[str, list[int]] | None]:
    """lm-eval's `limit` (the first N documents of every task) or, when some task has its
    own limit, `samples`: the first N indices of each task (lm-eval takes one or the other)."""
    limits = {task: options.task_limits[task] for task in suite.tasks
              if task in options.task_limits}
    if not limits:
        return options.limit_per_task, None
    samples = {}
    for task in suite.tasks:
        rows = _count_rows(suite.data_files[task])
        limit = limits.get(task, options.limit_per_task)
        samples[task] = list(range(rows if limit is None else min(limit, rows)))
    return None, samples


def _count_rows(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def _build_lm(source: ModelSource, options: HarnessOptions) -> Any:
    max_length = _context_length(source.model_dir)
    if source.path == "hf":
        import torch
        from lm_eval.models.huggingface import HFLM
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        # HFLM keeps a passed-in model where it is: load it onto the device directly.
        model = AutoModelForCausalLM.from_pretrained(source.model_dir, dtype=torch.float32,
                                                     device_map=device)
        tokenizer = AutoTokenizer.from_pretrained(source.model_dir)
        # The model's generation_config.max_new_tokens would override lm-eval's per-task
        # max_gen_toks (transformers prefers it over the max_length lm-eval passes).
        model.generation_config.max_new_tokens = None
        # add_bos_token=False: the task prompts carry the BOS string themselves, and the
        # perplexity task gets BOS as lm-eval's rolling-window prefix; adding it again here
        # would score a doubled BOS.
        return HFLM(pretrained=model, tokenizer=tokenizer,
                    batch_size=options.batch_size, max_length=max_length, add_bos_token=False,
                    device=device)
    if not source.base_url:
        raise EvalError("EVAL_CONFIG_INVALID",
                        "model path 'local-completions' needs the server's base URL "
                        "(EvalConfig.completions_base_url, or let the stage start an engine).")
    return _completions_class()(
        base_url=source.base_url.rstrip("/") + "/v1/completions",
        model=source.served_model_name or source.model_dir.name,
        tokenizer_backend="huggingface",
        tokenizer=str(source.model_dir),
        # Token ids, not text: the server scores exactly the tokens the HF path scores.
        tokenized_requests=True,
        add_bos_token=False,
        max_length=max_length,
        batch_size=1,
        num_concurrent=options.num_concurrent,
        timeout=options.request_timeout_seconds,
        max_retries=3,
    )


def _completions_class() -> type:
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    class CacheSafeLocalCompletions(LocalCompletionsAPI):
        """lm-eval 0.4.13 gives rolling-window requests the cache key None, which its own
        response cache then fails to hash (loglikelihood_rolling + use_cache crashes on API
        models). Each window gets a key made of its tokens instead."""

        def _loglikelihood_tokens(self, requests: list, **kwargs: Any) -> list:
            keyed = [(key if key is not None else ["rolling-window", list(ctx), list(cont)],
                      ctx, cont) for key, ctx, cont in requests]
            return super()._loglikelihood_tokens(keyed, **kwargs)

    return CacheSafeLocalCompletions


def _context_length(model_dir: Path) -> int:
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise EvalError("EVAL_MODEL_INVALID",
                        f"{model_dir}: no config.json; pass an HF model directory "
                        "(the train stage's output).")
    config = json.loads(config_path.read_text())
    return int(config.get("max_position_embeddings") or 2048)


def _sample(task: str, raw: dict[str, Any]) -> SampleResult:
    doc = raw["doc"]
    metrics: dict[str, float] = {}
    for name in raw["metrics"]:
        value = raw[name]
        if name in _PER_INSTRUCTION_METRICS:  # IFEval: one bool per instruction of the prompt
            metrics[name] = sum(map(bool, value)) / len(value) if value else math.nan
            metrics["num_instructions"] = float(len(value))
        elif isinstance(value, (tuple, list)):  # loglikelihood_rolling: (loglikelihood, units)
            loglikelihood, units = float(value[0]), float(value[1])
            if name == "bits_per_byte":
                metrics["bits_per_byte"] = -loglikelihood / units / math.log(2)
                metrics["loglikelihood"] = loglikelihood
                metrics["num_bytes"] = units
        else:
            metrics[name] = float(value)
    output = prompt = None
    if TASK_SPECS[task].generates:
        output = str(raw["filtered_resps"][0])
        prompt = str(raw["arguments"][0][0])
    return SampleResult(task, int(raw["doc_id"]), doc_hash(doc), metrics, output, doc, prompt)


def _task_metrics(lm_eval_result: dict[str, Any], samples: list[SampleResult]
                  ) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in lm_eval_result.items():
        metric, _, _filter = key.partition(",")
        if not _filter or not isinstance(value, (int, float)):
            continue  # "alias", "name", "N/A" stderrs
        out[metric] = float(value)
    for metric in list(out):
        if metric == "bits_per_byte":
            out["bits_per_byte_stderr"] = _perplexity_stderr(samples)
        elif metric in _PER_INSTRUCTION_METRICS:
            # Instructions of one prompt are not independent: no per-instruction stderr.
            continue
        elif samples and metric in samples[0].metrics:  # a mean of per-item values
            out[f"{metric}_stderr"] = _mean_stderr([s.metrics[metric] for s in samples])
    out["num_samples"] = float(len(samples))
    return out


def _mean_stderr(values: list[float]) -> float:
    from scipy import stats

    return float(stats.sem(values)) if len(values) > 1 else float("nan")


def _perplexity_stderr(samples: list[SampleResult]) -> float:
    """Bootstrap standard error of corpus bits per byte (a ratio of sums, so not a mean)."""
    import numpy as np
    from scipy import stats

    if len(samples) < 2:
        return float("nan")
    loglikelihoods = np.array([s.metrics["loglikelihood"] for s in samples])
    num_bytes = np.array([s.metrics["num_bytes"] for s in samples])

    def corpus_bits_per_byte(ll: np.ndarray, nb: np.ndarray, axis: int = -1) -> np.ndarray:
        return -ll.sum(axis=axis) / nb.sum(axis=axis) / math.log(2)

    result = stats.bootstrap((loglikelihoods, num_bytes), corpus_bits_per_byte, paired=True,
                             vectorized=True, n_resamples=1000, method="percentile",
                             rng=np.random.default_rng(0))
    return float(result.standard_error)
