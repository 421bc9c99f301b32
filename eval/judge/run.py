"""One judge run: calibration on human labels, rubric grading, pairwise comparison with a
length-controlled win rate, and whether the judge may gate.

The judged items are the first `eval.judge.max_items` prompts of `eval.judge.task` (shipyard_exact,
the chat skill, or IFEval), with the answers each model generated in the harness run (greedy),
paired by document hash. The judge sees the question as a person would (the conversation's
text, not the chat-template markup); rubric grades need a reference answer, so a task without
one (IFEval) is compared pairwise only.
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
from eval.judge import llmbar, pairwise, rubric
from eval.judge.cache import JudgeCache
from eval.judge.client import CallPolicy, Judge, JudgeClient, JudgeEndpoint
from eval.judge.human_calibration import (
    CalibrationCache,
    HumanCalibration,
    Statistics,
    calibrate_on_human,
    calibration_key,
    failed_floors,
    judge_endpoints,
    with_floors,
)
from eval.judge.jury import Jury
from eval.judge.length_control import LengthControlledWinRate, length_controlled_win_rate
from eval.judge.prompts import JudgePrompt, load_prompt

__all__ = ["JUDGED_TASK", "JudgeReport", "judged_question", "length_statistics", "run_judge"]


@dataclass
class JudgeReport:
    # "ok", or "not_configured" (no judge endpoint and no judge model directory)
    status: str
    judge_model: str | None = None
    base_url: str | None = None
    prompt_ids: dict[str, str] = field(default_factory=dict)
    # True only when the judge earned its vote on human labels (kappa and answer-order
    # agreement above their floors), its invalid-output rates are within the limit, and
    # there is a champion to compare with.
    gating: bool = False
    non_gating_reasons: list[str] = field(default_factory=list)
    # Calibration on human labels (LLMBar): what decides whether the judge gates.
    calibration: HumanCalibration | None = None
    pairwise: pairwise.PairwiseSummary | None = None
    rubric_candidate: rubric.RubricSummary | None = None
    rubric_champion: rubric.RubricSummary | None = None
    # Verbosity bias: answer lengths and how often the longer answer won a decisive pair.
    lengths: dict[str, float] = field(default_factory=dict)
    # Calls, cache hits, retries, failures, tokens, cost, seconds.
    usage: dict[str, float] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    # The length-controlled win rate beside the raw one (the gate uses the LC one), and the
    # answer-length distributions of both models.
    length_control: LengthControlledWinRate | None = None
    # The reference-labelled arithmetic pairs (calibration_pairs_<version>.jsonl): the
    # judged task's own domain, reported only (not human labels, so it never gates).
    reference_calibration: calib.CalibrationResult | None = None
    # "judge", or "jury" when several different models voted on the pairwise verdicts.
    judge_kind: str = "judge"
    jury_members: list[str] = field(default_factory=list)
    # The suite task whose answers were compared (eval.judge.task).
    task: str | None = None
    # Where the (first) judge came from: its source, model directory or server, and the
    # weights digest it is identified by.
    source: str | None = None
    identity: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CALIBRATION_CACHE_DIR = "calibration"  # under the judge-call cache: pruned with it (LRU)


def run_judge(config: EvalConfig, endpoint: JudgeEndpoint, candidate: Sequence[SampleResult],
              champion: Sequence[SampleResult] | None, cache_dir: Path | None,
              jury_endpoints: Sequence[JudgeEndpoint] = ()) -> JudgeReport:
    """Calibrate the judge on human labels (cached), grade, compare with the champion.

    `jury_endpoints`: further, DIFFERENT judge models; with any, the pairwise verdicts (the
    calibration's and the champion comparison's) are the jury's plurality vote, and the
    rubric grades stay `endpoint`'s."""
    cache = JudgeCache(cache_dir) if cache_dir is not None else None
    client = JudgeClient(endpoint, _policy(config), cache)
    voter: Judge = client
    if jury_endpoints:
        voter = Jury([client, *(JudgeClient(e, _policy(config), cache)
                                for e in jury_endpoints)])
    pair_prompt = load_prompt("pairwise", config.judge.prompt_version)
    single_prompt = load_prompt("single", config.judge.prompt_version)
    report = JudgeReport("ok", endpoint.model, endpoint.base_url,
                         {"pairwise": pair_prompt.prompt_id, "single": single_prompt.prompt_id},
                         judge_kind="jury" if isinstance(voter, Jury) else "judge",
                         jury_members=voter.member_identities if isinstance(voter, Jury)
                         else [], task=config.judge.task,
                         source=config.judge.source or config.judge.model_dir
                         or config.judge.base_url, identity=endpoint.identity)
    # Two-sided intervals whose lower end is the one-sided `confidence` bound the gate uses
    # (eval.gate's statistics settings are the evaluation's only ones).
    gate = config.gate
    stats: dict[str, Any] = {"confidence": 2 * gate.confidence - 1,
                             "resamples": gate.bootstrap_resamples, "seed": gate.bootstrap_seed}

    report.calibration = human_calibration(config, voter, pair_prompt, cache_dir)
    report.reference_calibration = calib.calibrate(
        voter, pair_prompt, calib.load_pairs(calib.calibration_path(
            config.judge.calibration_version)),
        version=config.judge.calibration_version, min_kappa=config.judge.min_kappa)

    chosen = list(candidate)[: config.judge.max_items]
    graded = all(has_reference(s) for s in chosen)
    if graded:
        report.rubric_candidate = rubric.summarise(
            rubric.grade(client, single_prompt, [_grade_item(s) for s in chosen]), **stats)
    if champion is not None:
        champion_by_hash = {s.doc_hash: s for s in champion}
        paired = [(s, champion_by_hash[s.doc_hash]) for s in chosen
                  if s.doc_hash in champion_by_hash]
        if graded:
            report.rubric_champion = rubric.summarise(
                rubric.grade(client, single_prompt, [_grade_item(c) for _, c in paired]),
                **stats)
        items = [pairwise.PairItem(s.doc_hash, judged_question(s), s.output or "",
                                   c.output or "") for s, c in paired]
        verdicts = pairwise.judge_pairs(voter, pair_prompt, items)
        report.pairwise = pairwise.summarise(verdicts, **stats)
        report.length_control = length_controlled_win_rate(items, verdicts, **stats)
        report.verdicts = [dataclasses.asdict(v) for v in verdicts]
        report.lengths = length_statistics(items, verdicts)
    report.usage = _usage(voter.members if isinstance(voter, Jury) else [client], config)
    report.non_gating_reasons = _non_gating_reasons(report, config, champion is not None)
    report.gating = not report.non_gating_reasons
    return report


def human_calibration(config: EvalConfig, judge: Judge, prompt: JudgePrompt,
                      cache_dir: Path | None) -> HumanCalibration:
    """The judge's calibration on LLMBar: from the cache when this judge, prompt, data and
    decoding were measured before, else measured (and cached unless a call failed: an
    unreachable judge is measured again next time, not remembered as a bad one)."""
    subsets, limit = config.judge.calibration_subsets, config.judge.calibration_limit_per_subset
    gate = config.gate
    statistics_ = Statistics(2 * gate.confidence - 1, gate.bootstrap_resamples, gate.bootstrap_seed)
    key = calibration_key(judge_identity=judge.identity, prompt_id=prompt.prompt_id,
                          data_sha256=llmbar.data_digest(subsets), subsets=subsets,
                          limit_per_subset=limit, max_tokens=judge.policy.max_tokens,
                          logprobs=judge.policy.request_logprobs, stats=statistics_,
                          endpoints=judge_endpoints(judge))
    cache = CalibrationCache(cache_dir / CALIBRATION_CACHE_DIR) if cache_dir else None
    if cache is not None and (hit := cache.get(key)) is not None:
        return with_floors(hit, config.judge.min_kappa, config.judge.min_order_agreement)
    failures_before = judge.stats.failures
    result = calibrate_on_human(
        judge, prompt, subsets, limit, statistics_, min_kappa=config.judge.min_kappa,
        min_order_agreement=config.judge.min_order_agreement,
        jury_members=judge.member_identities if isinstance(judge, Jury) else ())
    if cache is not None and judge.stats.failures == failures_before:
        cache.put(key, result)
    return result


def _policy(config: EvalConfig) -> CallPolicy:
    return CallPolicy(
        concurrency=config.judge.concurrency, timeout_seconds=config.judge.timeout_seconds,
        max_retries=config.judge.max_retries, backoff_seconds=config.judge.backoff_seconds,
        max_tokens=config.judge.max_tokens, request_logprobs=config.judge.request_logprobs)


def judged_question(sample: SampleResult) -> str:
    """What the judge is shown as the question: the document's prompt, or, for a chat
    document, its conversation as plain text (a lone user turn as it is)."""
    doc = sample.doc
    if "prompt" in doc:
        return str(doc["prompt"])
    messages = [(str(m["role"]), str(m["content"])) for m in doc["messages"]]
    if len(messages) == 1 and messages[0][0] == "user":
        return messages[0][1]
    return "\n\n".join(f"{role.capitalize()}: {content}" for role, content in messages)


def has_reference(sample: SampleResult) -> bool:
    return isinstance(sample.doc.get("answer"), str)


def _grade_item(sample: SampleResult) -> rubric.GradeItem:
    return rubric.GradeItem(sample.doc_hash, judged_question(sample), sample.doc["answer"],
                            sample.output or "")


def _non_gating_reasons(report: JudgeReport, config: EvalConfig, has_champion: bool
                        ) -> list[str]:
    cal = report.calibration
    reasons = failed_floors(cal) if cal is not None else ["no human-label calibration"]
    rates = {"calibration": cal.invalid_output_rate if cal else None,
             "pairwise": report.pairwise.invalid_output_rate if report.pairwise else None,
             "rubric": report.rubric_candidate.invalid_output_rate
             if report.rubric_candidate else None}
    for name, rate in rates.items():
        cap = config.judge.max_invalid_output_rate
        if rate is not None and not rate <= cap:
            reasons.append(f"{name} invalid-output rate {rate:.3f} > "
                           f"eval.judge.max_invalid_output_rate {cap}")
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


def _usage(clients: Sequence[JudgeClient], config: EvalConfig) -> dict[str, float]:
    totals = {name: sum(getattr(c.stats, name) for c in clients)
              for name in ("requests_sent", "cache_hits", "retries", "failures",
                           "prompt_tokens", "completion_tokens", "wall_seconds")}
    cost = (totals["prompt_tokens"] * config.judge.price_per_1k_prompt_tokens
            + totals["completion_tokens"] * config.judge.price_per_1k_completion_tokens) / 1000
    return {"requests_sent": totals["requests_sent"], "cache_hits": totals["cache_hits"],
            "retries": totals["retries"], "failed_calls": totals["failures"],
            "prompt_tokens": totals["prompt_tokens"],
            "completion_tokens": totals["completion_tokens"], "cost": cost,
            "wall_seconds": totals["wall_seconds"]}
