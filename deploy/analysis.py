"""Judging one canary step: absolute SLOs, canary versus stable, and a Mann-Whitney U test.

Kayenta-style: each check is PASS or FAIL with its numbers; any FAIL fails the step; too
little canary traffic makes it INCONCLUSIVE (no evidence is not evidence of health). The
Mann-Whitney test compares per-interval mean TTFT samples of the two tracks, one-sided
(is the canary slower?), and only fails when the shift is also larger than the slack, so a
statistically significant but harmless difference does not roll back a release.

Means and p95s do not see a tail: a canary that makes 3 % of requests ten times slower keeps
both. Once both tracks served `p99_min_requests`, the p99s are compared too, and the share of
requests beyond the stable's p95 (per request, from the histogram buckets) by a one-sided
Fisher test. A stable that errors or goes silent mid-step is no baseline: the step is
INCONCLUSIVE, not a pass measured against the stable's healthier past.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from scipy.stats import fisher_exact, mannwhitneyu

from deploy.config import DeployConfig
from deploy.metric_sources import Histogram, TrackSnapshot
from deploy.outcomes import Outcome

# Fewer samples per side than this and the U test has no power: it is skipped, not failed.
MIN_SAMPLES_FOR_U_TEST = 3
# A p95 over fewer requests than this is just the slowest one: comparing two such "p95s"
# judges one outlier against another, so the canary-vs-stable p95 checks wait for this many
# requests on both sides (the absolute SLOs and the U test still apply).
MIN_REQUESTS_FOR_P95_COMPARISON = 20
# A stable that got none of n requests in an interval, while it should have had
# (100 - canary_percent) % of them, is judged dead when the chance of that silence for a live
# stable, (canary_percent / 100) ** n over all its silent intervals, is below this.
STABLE_SILENCE_CHANCE = 1e-3


@dataclass(frozen=True)
class Thresholds:
    min_requests: int
    max_ttft_p95_seconds: float
    max_itl_p95_seconds: float
    max_error_rate: float
    max_latency_ratio: float
    latency_slack_seconds: float
    mann_whitney_alpha: float
    p99_min_requests: int = 200
    max_tail_share_increase: float = 0.02
    max_stable_error_rate: float = 0.05

    @classmethod
    def from_config(cls, config: DeployConfig) -> Thresholds:
        return cls(config.min_requests, config.max_ttft_p95_seconds, config.max_itl_p95_seconds,
                   config.max_error_rate, config.max_latency_ratio,
                   config.latency_slack_seconds, config.mann_whitney_alpha,
                   config.p99_min_requests, config.max_tail_share_increase,
                   config.max_stable_error_rate)


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
    ttft_p99_seconds: float | None = None
    e2e_p99_seconds: float | None = None
    # the end-to-end latency histogram: (upper bound, cumulative requests), for the tail share
    e2e_buckets: tuple[tuple[float, float], ...] = ()
    # per scrape interval: (this track's requests, both tracks' requests) in it
    interval_requests: tuple[tuple[float, float], ...] = ()

    @classmethod
    def from_window(cls, window: TrackSnapshot, samples: Sequence[float] = (),
                    interval_requests: Sequence[tuple[float, float]] = ()) -> WindowStats:
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
            ttft_p99_seconds=window.ttft.quantile(0.99),
            e2e_p99_seconds=window.e2e.quantile(0.99),
            e2e_buckets=window.e2e.buckets,
            interval_requests=tuple(interval_requests),
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
                 thresholds: Thresholds, stable_now: WindowStats | None = None,
                 canary_percent: int | None = None) -> StepAnalysis:
    """Judge the canary's window against absolute SLOs and against `baseline` (the stable
    track over the same window, or over the rollout so far when it got no traffic now).

    `stable_now` is the stable over this same window and `canary_percent` the step's weight:
    with them a stable that errored or went silent makes the step INCONCLUSIVE (unless the
    canary fails on its own numbers): the canary cannot be judged against it."""
    absolute = _absolute_checks(canary, thresholds)
    health = _stable_health(stable_now, canary_percent, thresholds)
    checks = [
        *absolute,
        *health,
        *_relative_checks(canary, baseline, thresholds),
        _mann_whitney(canary, baseline, thresholds),
        *_tail_checks(canary, baseline, thresholds),
    ]
    absolute_failed = [c for c in absolute if c.status == "FAIL"]
    unhealthy = [c for c in health if c.status == "FAIL"]
    if unhealthy and not absolute_failed:
        return StepAnalysis("INCONCLUSIVE",
                            tuple(f"{c.name}: {c.detail}; the canary cannot be judged against "
                                  "it" for c in unhealthy), tuple(checks))
    failed = [c for c in checks if c.status == "FAIL" and c not in unhealthy]
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


def _stable_health(stable: WindowStats | None, canary_percent: int | None,
                   t: Thresholds) -> list[Check]:
    """The stable as a baseline this step: its 5xx rate, and whether it went silent while it
    should have had traffic. FAIL here means 'no baseline', judged INCONCLUSIVE."""
    if stable is None or canary_percent is None or canary_percent >= 100:
        return []  # at 100 % the stable gets no traffic by design
    checks = [_upper("stable_error_rate", stable.error_rate, t.max_stable_error_rate,
                     "stable error rate this step")]
    silent = [total for mine, total in stable.interval_requests if mine <= 0 and total > 0]
    chance = (canary_percent / 100) ** sum(silent)
    detail = (f"stable got no requests in {len(silent)} of {len(stable.interval_requests)} "
              f"intervals ({sum(silent):.0f} requests, all elsewhere, at {100 - canary_percent}"
              f" % stable weight: chance {chance:.2g} for a live stable)")
    checks.append(Check("stable_alive", "FAIL" if chance < STABLE_SILENCE_CHANCE else "PASS",
                        chance, STABLE_SILENCE_CHANCE, detail))
    return checks


def _tail_checks(canary: WindowStats, baseline: WindowStats | None,
                 t: Thresholds) -> list[Check]:
    """p99s and the per-request tail share, once both tracks have `p99_min_requests`."""
    names = ("ttft_p99_vs_stable", "e2e_p99_vs_stable", "tail_share_e2e")
    fewest = min(canary.requests, baseline.requests) if baseline is not None else 0
    if baseline is None or fewest < t.p99_min_requests:
        return [Check(name, "SKIPPED", None, None,
                      f"{fewest} requests on one side; the tail needs {t.p99_min_requests}")
                for name in names]
    checks = []
    for name, mine, theirs in (
            (names[0], canary.ttft_p99_seconds, baseline.ttft_p99_seconds),
            (names[1], canary.e2e_p99_seconds, baseline.e2e_p99_seconds)):
        if mine is None or theirs is None:
            checks.append(Check(name, "SKIPPED", mine, None, "no samples"))
            continue
        limit = theirs * t.max_latency_ratio + t.latency_slack_seconds
        checks.append(_upper(name, mine, limit, f"canary p99 vs stable p99 {theirs:.4f} s "
                             f"x {t.max_latency_ratio} + {t.latency_slack_seconds} s"))
    checks.append(_tail_share(canary, baseline, t))
    return checks


def _tail_share(canary: WindowStats, baseline: WindowStats, t: Thresholds) -> Check:
    """Share of requests above the first bucket bound at or past the stable's end-to-end p95,
    canary versus stable, one-sided Fisher exact test (does the canary have more?). A bucket
    bound, so both counts are exact, not interpolated."""
    p95 = Histogram(baseline.e2e_buckets, 0.0, float(baseline.requests)).quantile(0.95)
    edge = next((le for le, _ in baseline.e2e_buckets if p95 is not None and le >= p95), None)
    if edge is None or math.isinf(edge):
        return Check("tail_share_e2e", "SKIPPED", None, None, "no finite bucket past stable p95")
    counts = []
    for stats in (canary, baseline):
        total = stats.e2e_buckets[-1][1] if stats.e2e_buckets else 0.0
        within = dict(stats.e2e_buckets).get(edge, total)
        counts.append((round(total - within), round(total)))
    (slow_c, n_c), (slow_s, n_s) = counts
    if min(n_c, n_s) == 0:
        return Check("tail_share_e2e", "SKIPPED", None, None, "no e2e samples")
    share_c, share_s = slow_c / n_c, slow_s / n_s
    p_value = float(fisher_exact([[slow_c, n_c - slow_c], [slow_s, n_s - slow_s]],
                                 alternative="greater").pvalue)
    failed = p_value < t.mann_whitney_alpha and share_c > share_s + t.max_tail_share_increase
    detail = (f"requests slower than {edge} s (the stable's p95 bucket): canary {share_c:.2%} "
              f"of {n_c} vs stable {share_s:.2%} of {n_s}, Fisher p={p_value:.3g} (alpha "
              f"{t.mann_whitney_alpha}, allowed increase {t.max_tail_share_increase:.0%})")
    return Check("tail_share_e2e", "FAIL" if failed else "PASS", share_c,
                 share_s + t.max_tail_share_increase, detail)


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
