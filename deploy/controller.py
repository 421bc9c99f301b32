"""The canary state machine: for each step, shift traffic, bake, judge, then go on, promote
or roll back. Every decision and the numbers behind it go into the decision record.

    steps [10, 50, 100]:  weight -> bake (>= bake_seconds and >= min_requests canary
    requests, at most max_extra_bake_seconds longer) -> analyze_step -> PASS: next step
                                                                      FAIL / INCONCLUSIVE: stop

The controller only talks to a `TrafficControl` (local router or HTTPRoute weights) and a
`MetricsSource` (router scrape or Prometheus), so the same code runs locally and on a cluster.

Given the deployment directory (`work_dir`), it also publishes its progress there every scrape
interval (`rollout-status.json`, read by `shipyard status`) and obeys the control file
`shipyard promote|abort|pause|resume` leaves (deploy/control.py) at the next interval:
promote ends the step as PASS (`--full`: straight to 100 % and PASS), abort ends it as FAIL
(rolled back), pause holds the weight and stops the bake clock until resume. Who acted and
when goes on the timeline point of the interval that obeyed (`control`), so into the decision
record. While paused, a canary that breaks an absolute SLO still fails fast, and a pause that
outlasts `max_pause_seconds` ends the step INCONCLUSIVE (rolled back).

No unsupervised canary: where the traffic control leases the canary's weight (the local
router), the controller renews the lease every scrape interval; if this process dies or
stalls, the lease lapses and the router sends all traffic back to the stable by itself. A
renewal that comes too late (DEPLOY_CANARY_LEASE_LOST) ends the step INCONCLUSIVE.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from common.errors import StageError
from deploy.analysis import (
    Outcome,
    StepAnalysis,
    Thresholds,
    WindowStats,
    analyze_step,
)
from deploy.config import DeployConfig
from deploy.control import ControlCommand, take_control, write_status
from deploy.metric_sources import MetricsSource, TrackSnapshot, merge

logger = logging.getLogger(__name__)

TRACKS = ("stable", "canary")


class TrafficControl(Protocol):
    def set_canary_weight(self, percent: int) -> None: ...


@runtime_checkable
class LeasedTraffic(Protocol):
    """Traffic control whose canary weight lapses unless renewed (the local router). An
    HTTPRoute has no lease: docs/security.md, "Supervised canary"."""

    def renew_canary_lease(self) -> None: ...


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
                 sleep: Callable[[float], None] = time.sleep,
                 work_dir: Path | None = None) -> None:
        self.traffic = traffic
        self.source = source
        self.config = config
        self.thresholds = Thresholds.from_config(config)
        self._clock = clock
        self._sleep = sleep
        self._start = clock()
        self._stable_history: list[TrackSnapshot] = []
        self._stable_samples: list[float] = []
        # control commands and published progress (None: neither, e.g. a unit test)
        self.work_dir = work_dir
        self._started_unix_seconds = time.time()
        self._paused = False
        self._paused_since: float | None = None  # clock seconds of the pause being held
        self._finish_now = False  # `promote --full`: no further steps
        self._step_index = 0
        self._set_weight = 0
        self._bake_elapsed_seconds = 0.0
        self._last_verdict: dict[str, Any] | None = None
        self._controls: list[dict[str, Any]] = []

    def run(self) -> RolloutReport:
        report = RolloutReport(outcome="PASS")
        for index, percent in enumerate(self.config.steps):
            self._step_index, self._bake_elapsed_seconds = index, 0.0
            self._set_canary_weight(percent)
            self._publish("Progressing")
            step = self._bake_and_judge(percent, report)
            report.steps.append(step)
            self._last_verdict = {"canary_percent": step.canary_percent,
                                  **step.analysis.to_dict(),
                                  "canary": _stats_dict(step.canary),
                                  "baseline": _stats_dict(step.baseline) if step.baseline
                                  else None}
            logger.warning("canary step %d%%: %s (%s)", percent, step.analysis.outcome,
                           "; ".join(step.analysis.reasons))
            print(f"[shipyard] canary {percent}%: {step.analysis.outcome} — "
                  f"{'; '.join(step.analysis.reasons)}", flush=True)
            if step.analysis.outcome != "PASS":
                report.outcome = step.analysis.outcome
                break
            if self._finish_now:
                break
        self._publish({"PASS": "Succeeded", "FAIL": "Failed"}.get(report.outcome,
                                                                  "Inconclusive"))
        return report

    # -- control commands and progress ------------------------------------------------------
    def _set_canary_weight(self, percent: int) -> None:
        self.traffic.set_canary_weight(percent)
        self._set_weight = percent

    def _publish(self, phase: str) -> None:
        if self.work_dir is None:
            return
        if phase == "Progressing" and self._paused:
            phase = "Paused"
        try:
            write_status(self.work_dir, {
                "phase": phase, "step_index": self._step_index + 1,
                "steps_total": len(self.config.steps), "steps": list(self.config.steps),
                "set_weight": self._set_weight, "paused": self._paused,
                "bake_elapsed_seconds": round(self._bake_elapsed_seconds, 3),
                "bake_seconds": self.config.bake_seconds,
                "last_verdict": self._last_verdict, "controls": self._controls,
            })
        except OSError as exc:  # progress is for humans; never let it break a rollout
            logger.error("could not write the rollout status: %s", exc)

    def _take_control(self, point: dict[str, Any]) -> ControlCommand | None:
        """The pending command, if any; noted on this interval's timeline `point`."""
        if self.work_dir is None:
            return None
        try:
            command = take_control(self.work_dir)
        except StageError as exc:
            logger.error("%s", exc)
            point["control_refused"] = {"code": exc.code, "reason": exc.message}
            return None
        if command is None:
            return None
        if command.issued_unix_seconds < self._started_unix_seconds:
            point["control_ignored"] = {**command.to_dict(),
                                        "reason": "issued before this rollout started"}
            return None
        event = {**command.to_dict(), "applied_t_seconds": point["t_seconds"],
                 "canary_percent": self._set_weight}
        point["control"] = event
        self._controls.append(event)
        print(f"[shipyard] canary {self._set_weight}%: {command.action} by {command.actor} "
              f"({command.issued_at})", flush=True)
        return command

    def _bake_and_judge(self, percent: int, report: RolloutReport) -> StepRecord:
        config = self.config
        started = self._clock()
        first = previous = self.source.snapshot(TRACKS)
        samples: dict[str, list[float]] = {track: [] for track in TRACKS}
        # per interval and track: (its requests, both tracks' requests): a silent stable shows
        interval_requests: dict[str, list[tuple[float, float]]] = {t: [] for t in TRACKS}
        paused_seconds = 0.0  # the bake clock stops while paused
        manual: tuple[Outcome, str] | None = None  # (outcome, reason) set by a control command
        while True:
            interval_start = self._clock()
            self._sleep(config.scrape_interval_seconds)
            if self._paused:
                paused_seconds += self._clock() - interval_start
            manual = self._renew_lease()
            current = self.source.snapshot(TRACKS)
            self._add_interval(report, percent, previous, current, samples)
            both = sum(current[t].minus(previous[t]).requests for t in TRACKS)
            for track in TRACKS:
                interval_requests[track].append(
                    (current[track].minus(previous[track]).requests, both))
            previous = current
            elapsed = self._clock() - started - paused_seconds
            self._bake_elapsed_seconds = elapsed
            command = self._take_control(report.timeline[-1])
            if command is not None and manual is None:
                manual = self._obey(command)
            if manual is None:
                manual = self._pause_expired()
            self._publish("Progressing")
            if manual is not None:
                break
            canary_window = current["canary"].minus(first["canary"])
            enough = canary_window.requests >= config.min_requests
            if enough and self._absolute_slo_breached(canary_window, samples["canary"]):
                break  # fail fast: no reason to keep users on a canary that breaks its SLOs
            if self._paused:
                continue
            if elapsed >= config.bake_seconds and enough:
                break
            if elapsed >= config.bake_seconds + config.max_extra_bake_seconds:
                break
        windows = {track: current[track].minus(first[track]) for track in TRACKS}
        canary = WindowStats.from_window(windows["canary"], samples["canary"])
        baseline, source = self._baseline(windows["stable"], samples["stable"])
        stable_now = WindowStats.from_window(windows["stable"], samples["stable"],
                                             interval_requests["stable"])
        analysis = analyze_step(canary, baseline, self.thresholds, stable_now, percent)
        if manual is not None:  # a person decided; the measured checks stay on record
            analysis = StepAnalysis(manual[0], (manual[1],), analysis.checks)
        self._stable_history.append(windows["stable"])
        self._stable_samples.extend(samples["stable"])
        return StepRecord(percent, started - self._start, self._clock() - self._start,
                          analysis, canary, baseline, source)

    def _renew_lease(self) -> tuple[Outcome, str] | None:
        """Renew the canary's weight lease; (INCONCLUSIVE, why) if it already lapsed."""
        if self._set_weight == 0 or not isinstance(self.traffic, LeasedTraffic):
            return None
        try:
            self.traffic.renew_canary_lease()
        except StageError as exc:
            if exc.code != "DEPLOY_CANARY_LEASE_LOST":
                raise
            logger.error("%s", exc)
            return "INCONCLUSIVE", f"{exc.code}: {exc.message}"
        return None

    def _pause_expired(self) -> tuple[Outcome, str] | None:
        if self._paused_since is None:
            return None
        paused = self._clock() - self._paused_since
        if paused < self.config.max_pause_seconds:
            return None
        self._paused, self._paused_since = False, None
        return "INCONCLUSIVE", (f"paused for {paused:.0f} s, past deploy.max_pause_seconds="
                                f"{self.config.max_pause_seconds:g}: the canary is rolled back")

    def _obey(self, command: ControlCommand) -> tuple[Outcome, str] | None:
        """Apply `command`; (outcome, reason) when it ends the step, else None."""
        who = f"{command.actor} at {command.issued_at}"
        if command.action == "pause":
            if not self._paused:
                self._paused_since = self._clock()
            self._paused = True
            return None
        self._paused_since = None
        if command.action == "resume":
            self._paused = False
            return None
        self._paused = False
        if command.action == "abort":
            return "FAIL", f"aborted by {who}"
        if command.action == "promote_full":
            self._finish_now = True
            if self._set_weight != 100:
                self._set_canary_weight(100)
            return "PASS", f"promoted to 100 % by {who} (remaining steps skipped)"
        return "PASS", f"promoted to the next step by {who} (bake cut short)"

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
