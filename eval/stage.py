"""`run_eval`: the Flyte-free eval stage.

    suite -> harness(candidate) -> scoring check -> harness(champion) -> judge -> gate -> report

The caller (eval/run.py, tests, bench) resolves where things are: the model
directories and digests, the champion (or None), any running endpoint (an engine for the
local-completions path, the judge server). This function starts no servers.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.config import EvalConfig
from eval.errors import EvalError
from eval.gate import GateDecision, decide
from eval.harness import HarnessOptions, HarnessResult, ModelSource, run_harness
from eval.judge.client import JudgeEndpoint
from eval.judge.run import JudgeReport, run_judge
from eval.report import build_report, render_html, write_json
from eval.suite.ifeval import IFEVAL_TASK
from eval.suite.specs import SCORING_CHECK_TASK, Suite, prepare_suite

logger = logging.getLogger(__name__)

REPORT_JSON_NAME = "eval_report.json"


@dataclass
class EvalOutcome:
    report: dict[str, Any]
    report_path: Path
    report_sha256: str
    html: str
    decision: GateDecision
    candidate: HarnessResult
    champion: HarnessResult | None
    judge: JudgeReport


def run_eval(config: EvalConfig, candidate: ModelSource, *, work_dir: Path,
             champion: ModelSource | None = None, judge_endpoint: JudgeEndpoint | None = None,
             start_judges: Callable[[], Sequence[JudgeEndpoint]] | None = None,
             eval_split: Path | None = None, cache_dir: Path | None = None) -> EvalOutcome:
    """Evaluate `candidate` (against `champion` when given) and decide the gate.

    The judge is `judge_endpoint`, or the first endpoint `start_judges` returns (the others
    vote with it as a jury); `start_judges` is called after the harness runs, so engines it
    starts do not compete with the models' generation.
    `eval_split`: the validated dataset's held-out split; the suite is rebuilt from it when
    it is not the shipped one. `cache_dir`: lm-eval response cache and judge-call cache.
    Raises EvalError EVAL_SCORING_CHECK_FAILED when log-probability scoring is broken. A gate
    FAIL is not an exception here: the outcome carries it, the caller decides.
    """
    started = time.perf_counter()
    suite, options = _prepare(config, candidate, work_dir, eval_split, cache_dir)
    candidate_result = run_harness(candidate, suite, options)
    check_scoring(candidate_result, config.scoring_check_min_accuracy, "candidate")
    champion_result = None
    if champion is not None:
        champion_suite, champion_options = _prepare(config, champion, work_dir, eval_split,
                                                    cache_dir)
        champion_result = run_harness(champion, champion_suite, champion_options)
        check_scoring(champion_result, config.scoring_check_min_accuracy, "champion")
    judge_started = time.perf_counter()
    judges = list(start_judges()) if start_judges is not None else (
        [judge_endpoint] if judge_endpoint is not None else [])
    judge = JudgeReport("not_configured")
    if judges:
        task = config.judge.task
        judge = run_judge(
            config, judges[0], candidate_result.samples[task],
            None if champion_result is None else champion_result.samples[task],
            None if cache_dir is None else cache_dir / "judge", jury_endpoints=judges[1:])
    decision = decide(config, candidate_result, champion_result, judge)
    timings = {"candidate_harness": candidate_result.wall_seconds,
               "champion_harness": champion_result.wall_seconds if champion_result else 0.0,
               "judge": time.perf_counter() - judge_started if judges else 0.0,
               "total": time.perf_counter() - started}
    report = build_report(decision=decision, candidate=candidate_result,
                          champion=champion_result, judge=judge, suite=suite,
                          config=dataclasses.asdict(config), timings=timings)
    report_path = work_dir / REPORT_JSON_NAME
    digest = write_json(report, report_path)
    logger.info("eval gate %s: %s", decision.outcome, "; ".join(decision.reasons))
    return EvalOutcome(report, report_path, digest, render_html(report), decision,
                       candidate_result, champion_result, judge)


def _prepare(config: EvalConfig, model: ModelSource, work_dir: Path, eval_split: Path | None,
             cache_dir: Path | None) -> tuple[Suite, HarnessOptions]:
    """The suite and harness options for one model. Rendered per model: the prompts carry
    that model's BOS string, or nothing when its chat template writes the start tokens. The
    data (and so the doc hashes that pair candidate and champion) is the same for both."""
    prompts = prompt_format(model.model_dir, config.use_chat_template)
    suite = prepare_suite(work_dir / f"suite-{model.digest[:16]}", config.tasks,
                          bos_token="" if prompts.chat_template else prompts.bos_token,
                          max_gen_tokens=config.max_gen_tokens, eval_split=eval_split,
                          ifeval_max_gen_tokens=config.ifeval_max_gen_tokens,
                          skill_max_gen_tokens=config.skill_max_gen_tokens)
    options = HarnessOptions(
        limit_per_task=config.limit_per_task, batch_size=config.batch_size,
        num_concurrent=config.num_concurrent, cache_dir=cache_dir,
        apply_chat_template=prompts.chat_template,
        system_instruction=config.system_instruction if prompts.chat_template else None,
        task_limits=({} if config.ifeval_limit is None or IFEVAL_TASK not in config.tasks
                     else {IFEVAL_TASK: config.ifeval_limit}))
    return suite, options


@dataclass(frozen=True)
class PromptFormat:
    bos_token: str
    # Prompts go through the tokenizer's chat template.
    chat_template: bool


def prompt_format(model_dir: Path, use_chat_template: bool | None = None) -> PromptFormat:
    """How `model_dir` is prompted: through its chat template when it has one (and
    `use_chat_template` is not False), else text after its BOS string."""
    tokenizer = _tokenizer(model_dir)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template and not has_template:
        raise EvalError("EVAL_MODEL_INVALID",
                        f"{model_dir}: eval.use_chat_template is true but its tokenizer has no "
                        "chat template. Evaluate a chat model, or set use_chat_template: null "
                        "(use the template where there is one) or false.")
    chat = has_template if use_chat_template is None else use_chat_template
    return PromptFormat(tokenizer.bos_token or "", chat)


def bos_token(model_dir: Path) -> str:
    return _tokenizer(model_dir).bos_token or ""


def _tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise EvalError("EVAL_MODEL_INVALID",
                        f"{model_dir}: cannot load its tokenizer ({exc}). Pass an HF model "
                        "directory with tokenizer files (the train stage's output).") from exc


def check_scoring(result: HarnessResult, min_accuracy: float, which: str) -> None:
    accuracy = result.metrics.get(SCORING_CHECK_TASK, {}).get("acc")
    if accuracy is None or not accuracy >= min_accuracy:
        raise EvalError(
            "EVAL_SCORING_CHECK_FAILED",
            f"{which} model ({result.model_path} path, digest {result.model_digest[:16]}): "
            f"{SCORING_CHECK_TASK} accuracy {accuracy} < scoring_check_min_accuracy "
            f"{min_accuracy}. Any "
            "model that is scored correctly ranks the reference above long random strings, "
            "so log-probability scoring is broken (a server not returning prompt logprobs "
            "with echo, a tokenizer mismatch, a wrong context length): no metric from this "
            "run can be trusted.", details={"accuracy": accuracy})
