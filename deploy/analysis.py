"""Judging one canary step: absolute SLOs, canary versus stable, and a Mann-Whitney U test.

Kayenta-style: each check is PASS or FAIL with its numbers; any FAIL fails the step; too
little canary traffic makes it INCONCLUSIVE (no evidence is not evidence of health). The
Mann-Whitney test compares per-interval mean TTFT samples of the two tracks, one-sided
(is the canary slower?), and only fails when the shift is also larger than the slack, so a
statistically significant but harmless difference does not roll back a release.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from scipy.stats import mannwhitneyu

from deploy.config import DeployConfig
from deploy.metric_sources import TrackSnapshot
from deploy.outcomes import Outcome

# Fewer samples per side than this and the U test has no power: it is skipped, not failed.
MIN_SAMPLES_FOR_U_TEST = 3
# A p95 over fewer requests than this is just the slowest one: comparing two such "p95s"
# judges one outlier against another, so the canary-vs-stable p95 checks wait for this many
# requests on both sides (the absolute SLOs and the U test still apply).
MIN_REQUESTS_FOR_P95_COMPARISON = 20


@dataclass(frozen=True)
class Thresholds:
    min_requests: int
    max_ttft_p95_seconds: float
    max_itl_p95_seconds: float
    max_error_rate: float
    max_latency_ratio: float
    latency_slack_seconds: float
    mann_whitney_alpha: float

    @classmethod
    def from_config(cls, config: DeployConfig) -> Thresholds:
        return cls(config.min_requests, config.max_ttft_p95_seconds, config.max_itl_p95_seconds,
                   config.max_error_rate, config.max_latency_ratio,
                   config.latency_slack_seconds, config.mann_whitney_alpha)


@dataclass(frozen=True)
class WindowStats:
    """One track over one step's window."""

    requests: int
    errors: int
    error_rate: float | None
    ttft_p95_seconds: float | None
    itl_p95_seconds: float | None
    e2e_p95_seconds: float | None
    # per scrape interval: mean TTFT of the requests finished in it (U-test samples)
    ttft_interval_means: tuple[float, ...] = ()
    client_errors: int = 0
    client_error_rate: float | None = None

    @classmethod
    def from_window(cls, window: TrackSnapshot, samples: Sequence[float] = ()) -> WindowStats:
        requests = round(window.requests)
        errors = round(window.errors)
        client_errors = round(window.client_errors)
        return cls(
            requests=requests,
            errors=errors,
            error_rate=errors / requests if requests else None,
            ttft_p95_seconds=window.ttft.quantile(0.95),
            itl_p95_seconds=window.itl.quantile(0.95),
            e2e_p95_seconds=window.e2e.quantile(0.95),
            ttft_interval_means=tuple(samples),
            client_errors=client_errors,
            client_error_rate=client_errors / requests if requests else None,
        )


@dataclass(frozen=True)
class Check:
    name: str
    status: Literal["PASS", "FAIL", "SKIPPED"]
    value: float | None
    threshold: float | None
    detail: str


@dataclass(frozen=True)
class StepAnalysis:
    outcome: Outcome
    reasons: tuple[str, ...]
    checks: tuple[Check, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "reasons": list(self.reasons),
                "checks": [asdict(c) for c in self.checks]}


def analyze_step(canary: WindowStats, baseline: WindowStats | None,
                 thresholds: Thresholds) -> StepAnalysis:
    """Judge the canary's window against absolute SLOs and against `baseline` (the stable
    track over the same window, or over the rollout so far when it got no traffic now)."""
    checks = [
        *_absolute_checks(canary, thresholds),
        *_relative_checks(canary, baseline, thresholds),
        _mann_whitney(canary, baseline, thresholds),
    ]
    failed = [c for c in checks if c.status == "FAIL"]
    if failed:
        return StepAnalysis("FAIL", tuple(f"{c.name}: {c.detail}" for c in failed), tuple(checks))
    if canary.requests < thresholds.min_requests:
        reason = (f"only {canary.requests} canary requests, {thresholds.min_requests} needed: "
                  "not enough evidence either way")
        return StepAnalysis("INCONCLUSIVE", (reason,), tuple(checks))
    return StepAnalysis("PASS", ("all checks passed",), tuple(checks))


def _absolute_checks(canary: WindowStats, t: Thresholds) -> list[Check]:
    return [
        _upper("error_rate", canary.error_rate, t.max_error_rate, "canary error rate"),
        _upper("ttft_p95", canary.ttft_p95_seconds, t.max_ttft_p95_seconds, "canary TTFT p95 (s)"),
        _upper("itl_p95", canary.itl_p95_seconds, t.max_itl_p95_seconds,
               "canary inter-token latency p95 (s)"),
    ]


def _relative_checks(canary: WindowStats, baseline: WindowStats | None,
                     t: Thresholds) -> list[Check]:
    checks = []
    for name, mine, theirs in (
        ("ttft_p95_vs_stable", canary.ttft_p95_seconds,
         baseline.ttft_p95_seconds if baseline else None),
        ("itl_p95_vs_stable", canary.itl_p95_seconds,
         baseline.itl_p95_seconds if baseline else None),
    ):
        if mine is None or theirs is None:
            checks.append(Check(name, "SKIPPED", mine, None, "no baseline or no samples"))
            continue
        assert baseline is not None
        fewest = min(canary.requests, baseline.requests)
        if fewest < MIN_REQUESTS_FOR_P95_COMPARISON:
            checks.append(Check(name, "SKIPPED", mine, None,
                                f"{fewest} requests on one side; a p95 comparison needs "
                                f"{MIN_REQUESTS_FOR_P95_COMPARISON}"))
            continue
        limit = theirs * t.max_latency_ratio + t.latency_slack_seconds
        checks.append(_upper(name, mine, limit, f"canary p95 vs stable p95 {theirs:.4f} s "
                             f"x {t.max_latency_ratio} + {t.latency_slack_seconds} s"))
    if baseline is not None and canary.error_rate is not None and baseline.error_rate is not None:
        limit = baseline.error_rate + t.max_error_rate
        checks.append(_upper("error_rate_vs_stable", canary.error_rate, limit,
                             f"canary error rate vs stable {baseline.error_rate:.4f} + "
                             f"{t.max_error_rate}"))
    # 4xx: same traffic, same requests. More refusals on the canary than on the stable is a
    # regression (counted as success before: a canary refusing everything would have passed).
    if canary.client_error_rate is not None:
        theirs = baseline.client_error_rate if baseline is not None else None
        limit = (theirs or 0.0) + t.max_error_rate
        checks.append(_upper("client_error_rate_vs_stable", canary.client_error_rate, limit,
                             f"canary 4xx rate vs stable {theirs if theirs is not None else 0:.4f}"
                             f" + {t.max_error_rate}"))
    return checks


def _mann_whitney(canary: WindowStats, baseline: WindowStats | None, t: Thresholds) -> Check:
    mine = list(canary.ttft_interval_means)
    theirs = list(baseline.ttft_interval_means) if baseline else []
    if min(len(mine), len(theirs)) < MIN_SAMPLES_FOR_U_TEST:
        return Check("mann_whitney_ttft", "SKIPPED", None, t.mann_whitney_alpha,
                     f"{len(mine)} canary / {len(theirs)} stable interval samples; "
                     f"{MIN_SAMPLES_FOR_U_TEST} each needed")
    result = mannwhitneyu(mine, theirs, alternative="greater")
    p_value = float(result.pvalue)
    shift = statistics.median(mine) - statistics.median(theirs)
    significant = p_value < t.mann_whitney_alpha
    failed = significant and shift > t.latency_slack_seconds
    detail = (f"U={float(result.statistic):.1f}, p={p_value:.4g} (alpha {t.mann_whitney_alpha}), "
              f"median shift {shift * 1000:+.1f} ms (slack {t.latency_slack_seconds * 1000:.0f} "
              f"ms), n={len(mine)}/{len(theirs)}")
    return Check("mann_whitney_ttft", "FAIL" if failed else "PASS", p_value,
                 t.mann_whitney_alpha, detail)


def _upper(name: str, value: float | None, limit: float, what: str) -> Check:
    if value is None:
        return Check(name, "SKIPPED", None, limit, f"{what}: no samples")
    status: Literal["PASS", "FAIL"] = "PASS" if value <= limit else "FAIL"
    return Check(name, status, value, limit, f"{what} = {value:.4f} (limit {limit:.4f})")
