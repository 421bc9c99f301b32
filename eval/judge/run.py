"""One judge run: calibration, rubric grading, pairwise comparison, and whether it may gate.

The judged items are the first `judge_max_items` shipyard_exact prompts, with the answers
each model generated in the harness run (greedy), paired by document hash.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.config import JUDGED_TASK, EvalConfig
from eval.harness import SampleResult
from eval.judge import calibration as calib
from eval.judge import pairwise, rubric
from eval.judge.cache import JudgeCache
from eval.judge.client import CallPolicy, JudgeClient, JudgeEndpoint
from eval.judge.prompts import load_prompt

__all__ = ["JUDGED_TASK", "JudgeReport", "length_statistics", "run_judge"]


@dataclass
class JudgeReport:
    # "ok", or "not_configured" (no judge endpoint and no judge model directory)
    status: str
    judge_model: str | None = None
    base_url: str | None = None
    prompt_ids: dict[str, str] = field(default_factory=dict)
    # True only when calibration kappa and invalid-output rates are within their limits
    # and there is a champion to compare with.
    gating: bool = False
    non_gating_reasons: list[str] = field(default_factory=list)
    calibration: calib.CalibrationResult | None = None
    pairwise: pairwise.PairwiseSummary | None = None
    rubric_candidate: rubric.RubricSummary | None = None
    rubric_champion: rubric.RubricSummary | None = None
    # Verbosity bias: answer lengths and how often the longer answer won a decisive pair.
    lengths: dict[str, float] = field(default_factory=dict)
    # Calls, cache hits, retries, failures, tokens, cost, seconds.
    usage: dict[str, float] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_judge(config: EvalConfig, endpoint: JudgeEndpoint, candidate: Sequence[SampleResult],
              champion: Sequence[SampleResult] | None, cache_dir: Path | None) -> JudgeReport:
    client = JudgeClient(endpoint, CallPolicy(
        concurrency=config.judge_concurrency, timeout_seconds=config.judge_timeout_seconds,
        max_retries=config.judge_max_retries, backoff_seconds=config.judge_backoff_seconds,
        max_tokens=config.judge_max_tokens, request_logprobs=config.judge_request_logprobs,
    ), JudgeCache(cache_dir) if cache_dir is not None else None)
    pair_prompt = load_prompt("pairwise", config.judge_prompt_version)
    single_prompt = load_prompt("single", config.judge_prompt_version)
    report = JudgeReport("ok", endpoint.model, endpoint.base_url,
                         {"pairwise": pair_prompt.prompt_id, "single": single_prompt.prompt_id})
    # Two-sided intervals whose lower end is the one-sided `confidence` bound the gate uses.
    stats: dict[str, Any] = {"confidence": 2 * config.confidence - 1,
             "resamples": config.bootstrap_resamples, "seed": config.bootstrap_seed}

    report.calibration = calib.calibrate(
        client, pair_prompt, calib.load_pairs(calib.calibration_path(
            config.judge_calibration_version)),
        version=config.judge_calibration_version, min_kappa=config.judge_min_kappa)

    chosen = list(candidate)[: config.judge_max_items]
    report.rubric_candidate = rubric.summarise(
        rubric.grade(client, single_prompt, [_grade_item(s, s.output or "") for s in chosen]),
        **stats)
    if champion is not None:
        champion_by_hash = {s.doc_hash: s for s in champion}
        paired = [(s, champion_by_hash[s.doc_hash]) for s in chosen
                  if s.doc_hash in champion_by_hash]
        report.rubric_champion = rubric.summarise(
            rubric.grade(client, single_prompt, [_grade_item(c, c.output or "")
                                                 for _, c in paired]), **stats)
        items = [pairwise.PairItem(s.doc_hash, s.doc["prompt"], s.output or "", c.output or "")
                 for s, c in paired]
        verdicts = pairwise.judge_pairs(client, pair_prompt, items)
        report.pairwise = pairwise.summarise(verdicts, **stats)
        report.verdicts = [dataclasses.asdict(v) for v in verdicts]
        report.lengths = length_statistics(items, verdicts)
    report.usage = _usage(client, config)
    report.non_gating_reasons = _non_gating_reasons(report, config, champion is not None)
    report.gating = not report.non_gating_reasons
    return report


def _grade_item(sample: SampleResult, answer: str) -> rubric.GradeItem:
    return rubric.GradeItem(sample.doc_hash, sample.doc["prompt"], sample.doc["answer"], answer)


def _non_gating_reasons(report: JudgeReport, config: EvalConfig, has_champion: bool
                        ) -> list[str]:
    reasons = []
    cal = report.calibration
    if cal is not None and not cal.passed:
        reasons.append(f"calibration kappa {cal.kappa:.3f} < judge_min_kappa "
                       f"{config.judge_min_kappa} on {cal.num_pairs} {cal.version} pairs")
    rates = {"calibration": cal.invalid_output_rate if cal else None,
             "pairwise": report.pairwise.invalid_output_rate if report.pairwise else None,
             "rubric": report.rubric_candidate.invalid_output_rate
             if report.rubric_candidate else None}
    for name, rate in rates.items():
        if rate is not None and not rate <= config.judge_max_invalid_output_rate:
            reasons.append(f"{name} invalid-output rate {rate:.3f} > "
                           f"judge_max_invalid_output_rate {config.judge_max_invalid_output_rate}")
    if not has_champion:
        reasons.append("no champion: nothing to compare pairwise")
    elif report.pairwise is not None and report.pairwise.num_valid_pairs == 0:
        reasons.append("no valid pairwise verdicts")
    return reasons


def length_statistics(items: Sequence[pairwise.PairItem],
                      verdicts: Sequence[pairwise.PairVerdict]) -> dict[str, float]:
    """Mean/median answer length (characters) of both sides, and the share of decisive
    pairs with different lengths that the longer answer won (0.5 = no verbosity bias)."""
    cand = [len(i.candidate) for i in items]
    champ = [len(i.champion) for i in items]
    longer_won = decided = 0
    for item, verdict in zip(items, verdicts, strict=True):
        if verdict.outcome in ("candidate", "champion") and len(item.candidate) != len(
                item.champion):
            decided += 1
            winner_is_candidate = verdict.outcome == "candidate"
            longer_won += winner_is_candidate == (len(item.candidate) > len(item.champion))
    return {
        "candidate_mean_chars": statistics.fmean(cand) if cand else float("nan"),
        "champion_mean_chars": statistics.fmean(champ) if champ else float("nan"),
        "candidate_median_chars": float(statistics.median(cand)) if cand else float("nan"),
        "champion_median_chars": float(statistics.median(champ)) if champ else float("nan"),
        "decisive_pairs_with_length_difference": float(decided),
        "longer_answer_win_rate": longer_won / decided if decided else float("nan"),
    }


def _usage(client: JudgeClient, config: EvalConfig) -> dict[str, float]:
    s = client.stats
    cost = (s.prompt_tokens * config.judge_price_per_1k_prompt_tokens
            + s.completion_tokens * config.judge_price_per_1k_completion_tokens) / 1000
    return {"requests_sent": s.requests_sent, "cache_hits": s.cache_hits,
            "retries": s.retries, "failed_calls": s.failures,
            "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
            "cost": cost, "wall_seconds": s.wall_seconds}
