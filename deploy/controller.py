"""The canary state machine: for each step, shift traffic, bake, judge, then go on, promote
or roll back. Every decision and the numbers behind it go into the decision record.

    steps [10, 50, 100]:  weight -> bake (>= bake_seconds and >= min_requests canary
    requests, at most max_extra_bake_seconds longer) -> analyze_step -> PASS: next step
                                                                      FAIL / INCONCLUSIVE: stop

The controller only talks to a `TrafficControl` (local router or HTTPRoute weights) and a
`MetricsSource` (router scrape or Prometheus), so the same code runs locally and on a cluster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from deploy.analysis import (
    Outcome,
    StepAnalysis,
    Thresholds,
    WindowStats,
    analyze_step,
)
from deploy.config import DeployConfig
from deploy.metric_sources import MetricsSource, TrackSnapshot, merge

logger = logging.getLogger(__name__)

TRACKS = ("stable", "canary")


class TrafficControl(Protocol):
    def set_canary_weight(self, percent: int) -> None: ...


@dataclass
class StepRecord:
    canary_percent: int
    started_seconds: float
    ended_seconds: float
    analysis: StepAnalysis
    canary: WindowStats
    baseline: WindowStats | None
    baseline_source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "canary_percent": self.canary_percent,
            "started_seconds": round(self.started_seconds, 3),
            "ended_seconds": round(self.ended_seconds, 3),
            **self.analysis.to_dict(),
            "canary": _stats_dict(self.canary),
            "baseline": _stats_dict(self.baseline) if self.baseline else None,
            "baseline_source": self.baseline_source,
        }


@dataclass
class RolloutReport:
    outcome: Outcome
    steps: list[StepRecord] = field(default_factory=list)
    # one point per scrape: seconds since start, canary weight, per-track interval numbers
    timeline: list[dict[str, Any]] = field(default_factory=list)


class CanaryController:
    def __init__(self, traffic: TrafficControl, source: MetricsSource, config: DeployConfig,
                 *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.traffic = traffic
        self.source = source
        self.config = config
        self.thresholds = Thresholds.from_config(config)
        self._clock = clock
        self._sleep = sleep
        self._start = clock()
        self._stable_history: list[TrackSnapshot] = []
        self._stable_samples: list[float] = []

    def run(self) -> RolloutReport:
        report = RolloutReport(outcome="PASS")
        for percent in self.config.steps:
            self.traffic.set_canary_weight(percent)
            step = self._bake_and_judge(percent, report)
            report.steps.append(step)
            logger.warning("canary step %d%%: %s (%s)", percent, step.analysis.outcome,
                           "; ".join(step.analysis.reasons))
            print(f"[shipyard] canary {percent}%: {step.analysis.outcome} — "
                  f"{'; '.join(step.analysis.reasons)}", flush=True)
            if step.analysis.outcome != "PASS":
                report.outcome = step.analysis.outcome
                return report
        return report

    def _bake_and_judge(self, percent: int, report: RolloutReport) -> StepRecord:
        config = self.config
        started = self._clock()
        first = previous = self.source.snapshot(TRACKS)
        samples: dict[str, list[float]] = {track: [] for track in TRACKS}
        while True:
            self._sleep(config.scrape_interval_seconds)
            current = self.source.snapshot(TRACKS)
            self._add_interval(report, percent, previous, current, samples)
            previous = current
            elapsed = self._clock() - started
            canary_window = current["canary"].minus(first["canary"])
            enough = canary_window.requests >= config.min_requests
            if enough and self._absolute_slo_breached(canary_window, samples["canary"]):
                break  # fail fast: no reason to keep users on a canary that breaks its SLOs
            if elapsed >= config.bake_seconds and enough:
                break
            if elapsed >= config.bake_seconds + config.max_extra_bake_seconds:
                break
        windows = {track: current[track].minus(first[track]) for track in TRACKS}
        canary = WindowStats.from_window(windows["canary"], samples["canary"])
        baseline, source = self._baseline(windows["stable"], samples["stable"])
        analysis = analyze_step(canary, baseline, self.thresholds)
        self._stable_history.append(windows["stable"])
        self._stable_samples.extend(samples["stable"])
        return StepRecord(percent, started - self._start, self._clock() - self._start,
                          analysis, canary, baseline, source)

    def _baseline(self, stable_window: TrackSnapshot,
                  stable_samples: list[float]) -> tuple[WindowStats | None, str]:
        # At 100 % the stable gets no traffic: compare with what it did earlier in the rollout.
        if stable_window.requests >= max(3, self.config.min_requests // 2):
            return WindowStats.from_window(stable_window, stable_samples), "stable, same window"
        history = merge(self._stable_history)
        if history.requests > 0:
            return (WindowStats.from_window(history, self._stable_samples),
                    "stable, earlier steps of this rollout")
        return None, "none (stable had no traffic)"

    def _absolute_slo_breached(self, window: TrackSnapshot, samples: list[float]) -> bool:
        stats = WindowStats.from_window(window, samples)
        analysis = analyze_step(stats, None, self.thresholds)
        return any(c.status == "FAIL" for c in analysis.checks)

    def _add_interval(self, report: RolloutReport, percent: int,
                      previous: dict[str, TrackSnapshot], current: dict[str, TrackSnapshot],
                      samples: dict[str, list[float]]) -> None:
        point: dict[str, Any] = {"t_seconds": round(self._clock() - self._start, 3),
                                 "canary_percent": percent}
        for track in TRACKS:
            interval = current[track].minus(previous[track])
            mean = interval.ttft.mean()
            if mean is not None:
                samples[track].append(mean)
            point[track] = {
                "requests": interval.requests,
                "errors": interval.errors,
                "ttft_mean_seconds": mean,
                "ttft_p95_seconds": interval.ttft.quantile(0.95),
                "itl_p95_seconds": interval.itl.quantile(0.95),
            }
        report.timeline.append(point)


def _stats_dict(stats: WindowStats) -> dict[str, Any]:
    return {
        "requests": stats.requests,
        "errors": stats.errors,
        "error_rate": stats.error_rate,
        "ttft_p95_seconds": stats.ttft_p95_seconds,
        "itl_p95_seconds": stats.itl_p95_seconds,
        "e2e_p95_seconds": stats.e2e_p95_seconds,
        "ttft_interval_means_seconds": [round(x, 6) for x in stats.ttft_interval_means],
    }
