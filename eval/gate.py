"""The promotion gate: PASS, FAIL or NO_EVIDENCE, with every number behind it.

Checks (settings: the `eval.gate` section, eval/config_gate.py), each recorded whether it
passes or not:

1. Hard bounds (always): a task's primary metric against `hard_floors` /
   `hard_ceilings`.
2. Non-inferiority against the champion (when there is one), per task in
   `non_inferiority_margins`: items are paired by document hash; the lower end of the
   paired-bootstrap interval of the per-item improvement must be above -margin. Fewer
   than `min_paired_items` pairs fails: too little evidence to show non-inferiority.
   McNemar's exact test and the minimum detectable effect are reported alongside.
3. Improvement over the champion (when there is one), per task in `must_improve`: the lower
   end of the same paired interval must be above 0, a strict win (e.g. on the fine-tuned
   skill), while the other tasks only need non-inferiority (e.g. IFEval within a margin).
4. Judge (when it is gating, see eval/judge/run.py): the lower end of the bootstrap
   interval of the candidate's length-controlled pairwise win rate (raw where a report has
   none) must be above 0.5 - margin.

With no champion only the hard bounds apply. The outcome is FAIL when any check fails, and
NO_EVIDENCE when there was nothing to check (no champion, no floors or ceilings, no gating
judge): a gate that checked nothing must not read as passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eval.config import EvalConfig
from eval.harness import HarnessResult
from eval.judge.run import JudgeReport
from eval.stats import PairedComparison, compare_paired
from eval.suite.specs import TASK_SPECS

PASS, FAIL, NO_EVIDENCE = "PASS", "FAIL", "NO_EVIDENCE"


@dataclass(frozen=True)
class GateCheck:
    # "floor:<task>", "ceiling:<task>", "non_inferiority:<task>", "improvement:<task>",
    # "judge_win_rate"
    name: str
    passed: bool
    detail: str


@dataclass
class GateDecision:
    outcome: str
    # FAIL: the failed checks. PASS: every check that passed.
    reasons: list[str]
    checks: list[GateCheck]
    comparisons: list[PairedComparison]
    # "champion" (paired comparison) or "absolute" (no champion: hard bounds only)
    mode: str
    # Context that did not decide anything (non-gating judge, no champion, ...).
    notes: list[str] = field(default_factory=list)


def decide(config: EvalConfig, candidate: HarnessResult, champion: HarnessResult | None,
           judge: JudgeReport | None = None) -> GateDecision:
    checks = _bound_checks(config, candidate)
    comparisons: list[PairedComparison] = []
    notes: list[str] = []
    if champion is None:
        notes.append("no champion: absolute floors and ceilings only")
        if config.gate.must_improve:
            notes.append(f"must_improve {sorted(config.gate.must_improve)} not checked: no "
                         "champion to improve on")
    else:
        notes.extend(_prompting_notes(candidate, champion))
        for task, margin in sorted(config.gate.non_inferiority_margins.items()):
            check, comparison = _non_inferiority(config, task, margin, candidate, champion)
            checks.append(check)
            if comparison is not None:
                comparisons.append(comparison)
        for task in sorted(set(config.gate.must_improve)):
            check, comparison = _improvement(config, task, candidate, champion)
            checks.append(check)
            if comparison is not None and task not in config.gate.non_inferiority_margins:
                comparisons.append(comparison)
    if judge is not None:
        checks_or_notes = _judge_check(config, judge)
        if isinstance(checks_or_notes, GateCheck):
            checks.append(checks_or_notes)
        else:
            notes.extend(checks_or_notes)
    failed = [c.detail for c in checks if not c.passed]
    if not checks:
        notes.append("nothing to gate on: no champion and no hard floors or ceilings")
    return GateDecision(
        outcome=FAIL if failed else PASS if checks else NO_EVIDENCE,
        reasons=failed or [c.detail for c in checks] or list(notes),
        checks=checks, comparisons=comparisons,
        mode="absolute" if champion is None else "champion", notes=notes)


def _bound_checks(config: EvalConfig, candidate: HarnessResult) -> list[GateCheck]:
    checks = []
    for task, floor in sorted(config.gate.hard_floors.items()):
        metric = TASK_SPECS[task].primary_metric
        value = candidate.metrics[task][metric]
        checks.append(GateCheck(f"floor:{task}", value >= floor,
                                f"{task} {metric} {value:.4f} "
                                f"{'>=' if value >= floor else '<'} floor {floor}"))
    for task, ceiling in sorted(config.gate.hard_ceilings.items()):
        metric = TASK_SPECS[task].primary_metric
        value = candidate.metrics[task][metric]
        checks.append(GateCheck(f"ceiling:{task}", value <= ceiling,
                                f"{task} {metric} {value:.4f} "
                                f"{'<=' if value <= ceiling else '>'} ceiling {ceiling}"))
    return checks


def _non_inferiority(config: EvalConfig, task: str, margin: float, candidate: HarnessResult,
                     champion: HarnessResult) -> tuple[GateCheck, PairedComparison | None]:
    name = f"non_inferiority:{task}"
    comparison, too_few = _paired(config, task, candidate, champion)
    if comparison is None:
        return GateCheck(name, False, f"{too_few}: too few to show non-inferiority"), None
    passed = comparison.interval_low > -margin
    detail = _detail(config, comparison, passed, -margin, "-margin")
    return GateCheck(name, passed, detail), comparison


def _improvement(config: EvalConfig, task: str, candidate: HarnessResult,
                 champion: HarnessResult) -> tuple[GateCheck, PairedComparison | None]:
    name = f"improvement:{task}"
    comparison, too_few = _paired(config, task, candidate, champion)
    if comparison is None:
        return GateCheck(name, False, f"{too_few}: too few to show an improvement"), None
    passed = comparison.interval_low > 0
    detail = _detail(config, comparison, passed, 0.0, "must-improve threshold")
    return GateCheck(name, passed, detail), comparison


def _paired(config: EvalConfig, task: str, candidate: HarnessResult, champion: HarnessResult
            ) -> tuple[PairedComparison | None, str]:
    """The paired comparison of `task`'s primary metric over the documents both models were
    scored on (paired by document hash, never by position), or None and why."""
    spec = TASK_SPECS[task]
    champion_by_hash = champion.by_doc_hash(task)
    pairs = [(s.metrics[spec.primary_metric],
              champion_by_hash[s.doc_hash].metrics[spec.primary_metric])
             for s in candidate.samples.get(task, []) if s.doc_hash in champion_by_hash]
    if len(pairs) < config.gate.min_paired_items:
        return None, (f"{task}: {len(pairs)} paired items < min_paired_items "
                      f"{config.gate.min_paired_items}")
    return compare_paired(
        task, spec.primary_metric, [c for c, _ in pairs], [h for _, h in pairs],
        higher_is_better=spec.higher_is_better, binary=spec.binary,
        confidence=config.gate.confidence, power=config.gate.power,
        resamples=config.gate.bootstrap_resamples, seed=config.gate.bootstrap_seed), ""


def _detail(config: EvalConfig, comparison: PairedComparison, passed: bool, threshold: float,
            threshold_name: str) -> str:
    mcnemar = ("" if comparison.mcnemar_p_value is None
               else f", McNemar p={comparison.mcnemar_p_value:.3g}")
    return (f"{comparison.task} {comparison.metric}: improvement {comparison.improvement:+.4f} "
            f"over {comparison.num_pairs} pairs, {config.gate.confidence:.0%} lower bound "
            f"{comparison.interval_low:+.4f} {'>' if passed else '<='} {threshold_name} "
            f"{threshold:+.4f}{mcnemar}, MDE {comparison.minimum_detectable_effect:.4f}")


def _prompting_notes(candidate: HarnessResult, champion: HarnessResult) -> list[str]:
    ours = candidate.config.get("chat_template_applied", False)
    theirs = champion.config.get("chat_template_applied", False)
    if ours == theirs:
        return []
    return [f"candidate prompted {'with' if ours else 'without'} its chat template, champion "
            f"{'with' if theirs else 'without'}: the paired comparisons mix prompt formats"]


def _judge_check(config: EvalConfig, judge: JudgeReport) -> GateCheck | list[str]:
    if judge.status != "ok":
        return [f"judge {judge.status}"]
    if not judge.gating or judge.pairwise is None:
        return [f"judge non-gating: {reason}" for reason in judge.non_gating_reasons]
    threshold = 0.5 - config.judge.non_inferiority_margin
    lc = judge.length_control
    if lc is not None:
        # Length-controlled: a judge that prefers longer answers cannot credit verbosity.
        # Same check name as before (registry policies require it by name).
        passed = lc.lc_win_rate_interval_low > threshold
        return GateCheck("judge_win_rate", passed,
                         f"judge length-controlled win rate {lc.lc_win_rate:.3f} over "
                         f"{lc.num_pairs} pairs (raw {lc.win_rate:.3f}, ties "
                         f"{lc.tie_rate:.3f}), {config.gate.confidence:.0%} lower bound "
                         f"{lc.lc_win_rate_interval_low:.3f} {'>' if passed else '<='} "
                         f"{threshold:.3f} (0.5 - margin)")
    summary = judge.pairwise
    passed = summary.win_rate_interval_low > threshold
    return GateCheck("judge_win_rate", passed,
                     f"judge win rate {summary.win_rate:.3f} over {summary.num_valid_pairs} "
                     f"pairs, {config.gate.confidence:.0%} lower bound "
                     f"{summary.win_rate_interval_low:.3f} {'>' if passed else '<='} "
                     f"{threshold:.3f} (0.5 - margin)")
