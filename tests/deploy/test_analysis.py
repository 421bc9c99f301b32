"""Canary judgement on constructed numbers: clearly worse latency fails, identical passes, too
little traffic is inconclusive; plus the histogram arithmetic the numbers come from."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from common.errors import StageError
from deploy.analysis import Thresholds, WindowStats, analyze_step
from deploy.config import DeployConfig
from deploy.controller import CanaryController
from deploy.metric_sources import Histogram, TrackSnapshot, parse_prometheus_text
from testing.clock import FakeClock

pytestmark = pytest.mark.unit

THRESHOLDS = Thresholds.from_config(DeployConfig(min_requests=50))
BOUNDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, float("inf"))


def histogram(samples: list[float]) -> Histogram:
    return Histogram(tuple((b, float(sum(s <= b for s in samples))) for b in BOUNDS),
                     sum(samples), float(len(samples)))


def window(ttft: list[float], *, errors: int = 0, interval_means: list[float] | None = None
           ) -> WindowStats:
    snapshot = TrackSnapshot(requests=len(ttft), errors=errors, ttft=histogram(ttft),
                             itl=histogram([0.005] * len(ttft)), e2e=histogram(ttft))
    return WindowStats.from_window(snapshot, interval_means or [])


def noisy(center: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [max(0.001, rng.gauss(center, center * 0.1)) for _ in range(n)]


def test_identical_tracks_pass() -> None:
    stable = window(noisy(0.04, 200, 1), interval_means=noisy(0.04, 20, 2))
    canary = window(noisy(0.04, 60, 3), interval_means=noisy(0.04, 20, 4))
    result = analyze_step(canary, stable, THRESHOLDS)
    assert result.outcome == "PASS", result.reasons
    assert {c.name: c.status for c in result.checks}["mann_whitney_ttft"] == "PASS"


def test_clearly_slower_canary_fails_relative_and_u_test() -> None:
    stable = window(noisy(0.04, 200, 1), interval_means=noisy(0.04, 20, 2))
    canary = window(noisy(0.4, 60, 3), interval_means=noisy(0.4, 20, 4))
    result = analyze_step(canary, stable, THRESHOLDS)
    assert result.outcome == "FAIL"
    failed = {c.name for c in result.checks if c.status == "FAIL"}
    assert {"ttft_p95_vs_stable", "mann_whitney_ttft"} <= failed
    assert "ttft_p95" not in failed  # 0.4 s is still inside the absolute 1 s SLO


def test_absolute_slo_breach_fails_even_without_a_baseline() -> None:
    result = analyze_step(window(noisy(1.5, 60, 3)), None, THRESHOLDS)
    assert result.outcome == "FAIL"
    assert [c.name for c in result.checks if c.status == "FAIL"] == ["ttft_p95"]


def test_error_rate_above_the_slo_fails() -> None:
    result = analyze_step(window(noisy(0.04, 60, 3), errors=6),
                          window(noisy(0.04, 200, 1)), THRESHOLDS)
    assert result.outcome == "FAIL"
    assert "error_rate" in {c.name for c in result.checks if c.status == "FAIL"}


def test_too_few_requests_is_inconclusive() -> None:
    result = analyze_step(window(noisy(0.04, 10, 3)), window(noisy(0.04, 200, 1)), THRESHOLDS)
    assert result.outcome == "INCONCLUSIVE"
    assert "10 canary requests, 50 needed" in result.reasons[0]


def test_significant_but_tiny_shift_is_not_a_failure() -> None:
    """Mann-Whitney alone would flag a 2 ms shift; the slack keeps it from failing."""
    stable = window(noisy(0.040, 200, 1), interval_means=[0.040 + i * 1e-5 for i in range(30)])
    canary = window(noisy(0.042, 60, 3), interval_means=[0.042 + i * 1e-5 for i in range(30)])
    result = analyze_step(canary, stable, THRESHOLDS)
    check = {c.name: c for c in result.checks}["mann_whitney_ttft"]
    assert check.value is not None and check.value < 0.05  # significant...
    assert check.status == "PASS" and result.outcome == "PASS"  # ...but harmless


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    h = Histogram(((0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)), 10.0, 100.0)
    assert h.quantile(0.5) == pytest.approx(0.1)
    assert h.quantile(0.75) == pytest.approx(0.15)
    assert Histogram().quantile(0.95) is None
    later = Histogram(((0.1, 60.0), (0.2, 150.0), (float("inf"), 150.0)), 20.0, 150.0)
    window_ = later.minus(h)
    assert window_.count == 50 and window_.buckets[0] == (0.1, 10.0)


def test_prometheus_text_parsing_keeps_labels() -> None:
    text = ('# TYPE vllm:request_success counter\n'
            'vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 3\n'
            'vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 2\n')
    samples = parse_prometheus_text(text)
    assert sum(v for _, v in samples["vllm:request_success_total"]) == 5


class ScriptedSource:
    """Cumulative numbers that grow by fixed per-interval amounts for each track."""

    def __init__(self, clock: FakeClock, per_second: dict[str, tuple[float, float]]) -> None:
        self.clock = clock
        self.per_second = per_second  # track -> (requests per second, ttft seconds)

    def snapshot(self, tracks: Sequence[str]) -> dict[str, TrackSnapshot]:
        out = {}
        for track in tracks:
            rate, ttft = self.per_second[track]
            n = int(rate * self.clock.now)
            out[track] = TrackSnapshot(requests=n, ttft=histogram([ttft] * n),
                                       itl=histogram([0.005] * n), e2e=histogram([ttft] * n))
        return out


class RecordingTraffic:
    def __init__(self) -> None:
        self.weights: list[int] = []

    def set_canary_weight(self, percent: int) -> None:
        self.weights.append(percent)


def test_controller_walks_the_steps_and_stops_at_the_first_failure() -> None:
    clock = FakeClock()
    config = DeployConfig(steps=[10, 50, 100], bake_seconds=10, min_requests=5,
                          scrape_interval_seconds=1.0, max_extra_bake_seconds=5)
    traffic = RecordingTraffic()
    healthy = CanaryController(traffic, ScriptedSource(clock, {"stable": (10, 0.04),
                                                               "canary": (2, 0.04)}),
                               config, clock=clock, sleep=clock.sleep).run()
    assert healthy.outcome == "PASS" and traffic.weights == [10, 50, 100]
    assert [s.baseline_source for s in healthy.steps][-1] == "stable, same window"

    clock.now, traffic.weights = 0.0, []
    slow = CanaryController(traffic, ScriptedSource(clock, {"stable": (10, 0.04),
                                                            "canary": (2, 2.5)}),
                            config, clock=clock, sleep=clock.sleep).run()
    assert slow.outcome == "FAIL" and traffic.weights == [10]
    assert slow.steps[0].ended_seconds < config.bake_seconds  # failed fast

    clock.now, traffic.weights = 0.0, []
    idle = CanaryController(traffic, ScriptedSource(clock, {"stable": (10, 0.04),
                                                            "canary": (0.1, 0.04)}),
                            config, clock=clock, sleep=clock.sleep).run()
    assert idle.outcome == "INCONCLUSIVE"
    assert idle.steps[0].ended_seconds >= config.bake_seconds + config.max_extra_bake_seconds


@pytest.mark.parametrize("overrides", [
    {"steps": [10, 50]}, {"steps": [50, 10, 100]}, {"engine": "tgi"}, {"backend": "ecs"},
    {"max_error_rate": 2.0}, {"backend": "kubernetes"}, {"min_requests": 0},
    # the overlay's container args decide on a cluster: a flag that would be ignored is refused
    {"backend": "kubernetes", "prometheus_url": "http://p:9090", "gateway_url": "http://g",
     "enforce_eager": True},
])
def test_deploy_config_refuses_bad_values(overrides: dict[str, object]) -> None:
    with pytest.raises(StageError) as caught:
        DeployConfig(**overrides)  # type: ignore[arg-type]
    assert caught.value.code == "CONFIG_INVALID"


def test_one_slow_request_in_a_small_window_is_not_a_p95_regression() -> None:
    """With 7 canary requests the 'p95' is the slowest one; it is not compared to stable."""
    thresholds = Thresholds.from_config(DeployConfig(min_requests=5, max_ttft_p95_seconds=2.0))
    canary = window([0.04] * 6 + [1.4], interval_means=[0.6, 0.04, 0.12])
    stable = window(noisy(0.04, 62, 1), interval_means=noisy(0.04, 5, 2))
    result = analyze_step(canary, stable, thresholds)
    checks = {c.name: c for c in result.checks}
    assert checks["ttft_p95_vs_stable"].status == "SKIPPED"
    assert "a p95 comparison needs 20" in checks["ttft_p95_vs_stable"].detail
    assert result.outcome == "PASS", result.reasons


def test_canary_answering_4xx_where_the_stable_answers_2xx_fails() -> None:
    """Refusals are not successes: a canary that answers 400 to what the stable serves (a
    broken template, a smaller context) fails, however fast its refusals are."""
    fast = noisy(0.01, 60, 5)
    stable = window(noisy(0.04, 200, 1), interval_means=noisy(0.04, 20, 2))
    snapshot = TrackSnapshot(requests=60, errors=0, client_errors=30, ttft=histogram(fast),
                             itl=histogram([0.005] * 60), e2e=histogram(fast))
    canary = WindowStats.from_window(snapshot, noisy(0.01, 20, 6))
    result = analyze_step(canary, stable, THRESHOLDS)
    assert result.outcome == "FAIL"
    check = {c.name: c for c in result.checks}["client_error_rate_vs_stable"]
    assert check.status == "FAIL" and check.value == 0.5


def test_4xx_on_both_tracks_is_the_clients_and_passes() -> None:
    both = TrackSnapshot(requests=200, client_errors=10, ttft=histogram(noisy(0.04, 200, 1)),
                         itl=histogram([0.005] * 200), e2e=histogram(noisy(0.04, 200, 1)))
    stable = WindowStats.from_window(both, noisy(0.04, 20, 2))
    canary = WindowStats.from_window(both, noisy(0.04, 20, 4))
    result = analyze_step(canary, stable, THRESHOLDS)
    assert {c.name: c.status for c in result.checks}["client_error_rate_vs_stable"] == "PASS"
    assert result.outcome == "PASS", result.reasons


def test_router_metrics_count_4xx_and_5xx_per_track() -> None:
    from deploy.metric_sources import _by_status_class

    samples = parse_prometheus_text(
        'shipyard_router_requests_total{backend="canary",code="400"} 7\n'
        'shipyard_router_requests_total{backend="canary",code="503"} 2\n'
        'shipyard_router_requests_total{backend="canary",code="200"} 11\n'
        'shipyard_router_requests_total{backend="stable",code="404"} 1\n')
    assert _by_status_class(samples, "canary", "4") == 7
    assert _by_status_class(samples, "canary", "5") == 2
    assert _by_status_class(samples, "stable", "4") == 1


# -- the tail and a dead baseline (issue #19 item 6) -------------------------------------------
def _tail_thresholds() -> Thresholds:
    return Thresholds.from_config(DeployConfig(min_requests=50, p99_min_requests=200))


def test_a_canary_making_three_percent_of_requests_ten_times_slower_fails() -> None:
    stable = window(noisy(0.1, 1000, 1), interval_means=noisy(0.1, 20, 2))
    canary = window(noisy(0.1, 970, 3) + noisy(1.0, 30, 4),
                    interval_means=noisy(0.127, 20, 5))
    result = analyze_step(canary, stable, _tail_thresholds())
    checks = {c.name: c.status for c in result.checks}
    # What was judged before sees nothing: means and p95s stay within bounds.
    assert checks["ttft_p95_vs_stable"] == checks["mann_whitney_ttft"] == "PASS"
    assert checks["ttft_p95"] == checks["error_rate"] == "PASS"
    assert result.outcome == "FAIL", result.reasons
    assert checks["ttft_p99_vs_stable"] == checks["e2e_p99_vs_stable"] == "FAIL"
    assert checks["tail_share_e2e"] == "FAIL"


def test_a_healthy_canary_passes_the_tail_checks() -> None:
    stable = window(noisy(0.1, 1000, 1), interval_means=noisy(0.1, 20, 2))
    canary = window(noisy(0.1, 1000, 3), interval_means=noisy(0.1, 20, 4))
    result = analyze_step(canary, stable, _tail_thresholds())
    checks = {c.name: c.status for c in result.checks}
    assert result.outcome == "PASS", result.reasons
    assert checks["ttft_p99_vs_stable"] == checks["tail_share_e2e"] == "PASS"


def test_the_tail_waits_for_p99_min_requests() -> None:
    stable = window(noisy(0.1, 150, 1), interval_means=noisy(0.1, 20, 2))
    canary = window(noisy(0.1, 145, 3) + noisy(1.0, 5, 4), interval_means=noisy(0.13, 20, 5))
    checks = {c.name: c for c in analyze_step(canary, stable, _tail_thresholds()).checks}
    assert checks["ttft_p99_vs_stable"].status == "SKIPPED"
    assert "the tail needs 200" in checks["ttft_p99_vs_stable"].detail


def _stable_with_intervals(intervals: Sequence[tuple[float, float]], errors: int = 0
                           ) -> WindowStats:
    requests = int(sum(mine for mine, _ in intervals))
    snapshot = TrackSnapshot(requests=requests, errors=errors,
                             ttft=histogram(noisy(0.04, requests, 1)),
                             itl=histogram([0.005] * requests),
                             e2e=histogram(noisy(0.04, requests, 1)))
    return WindowStats.from_window(snapshot, noisy(0.04, 10, 2), intervals)


def test_a_stable_that_goes_silent_mid_step_makes_it_inconclusive() -> None:
    # 50 %: 8 stable of 16 requests per interval, then nothing reaches the stable.
    stable = _stable_with_intervals([(8, 16)] * 5 + [(0, 16)] * 5)
    canary = window(noisy(0.04, 120, 3), interval_means=noisy(0.04, 10, 4))
    assert analyze_step(canary, stable, THRESHOLDS).outcome == "PASS"  # without the health
    result = analyze_step(canary, stable, THRESHOLDS, stable, 50)
    assert result.outcome == "INCONCLUSIVE"
    assert any("stable_alive" in reason for reason in result.reasons)


def test_a_stable_answering_errors_mid_step_makes_it_inconclusive() -> None:
    stable = _stable_with_intervals([(8, 16)] * 10, errors=30)
    canary = window(noisy(0.04, 80, 3), interval_means=noisy(0.04, 10, 4))
    result = analyze_step(canary, stable, THRESHOLDS, stable, 50)
    assert result.outcome == "INCONCLUSIVE"
    assert any("stable_error_rate" in reason for reason in result.reasons)


def test_a_canary_breaking_its_slo_still_fails_when_the_stable_is_dead() -> None:
    stable = _stable_with_intervals([(8, 16)] * 5 + [(0, 16)] * 5)
    result = analyze_step(window(noisy(1.5, 60, 3)), stable, THRESHOLDS, stable, 50)
    assert result.outcome == "FAIL"


def test_a_stable_silent_by_chance_on_thin_traffic_is_not_dead() -> None:
    # 10 % canary, 2 requests in the interval, none to the stable: 1 % chance, not evidence.
    stable = _stable_with_intervals([(9, 10)] * 8 + [(0, 2)])
    canary = window(noisy(0.04, 60, 3), interval_means=noisy(0.04, 10, 4))
    result = analyze_step(canary, stable, THRESHOLDS, stable, 10)
    assert result.outcome == "PASS", result.reasons


class DyingStableSource(ScriptedSource):
    """The stable stops answering (no requests reach it) at `dies_at` seconds."""

    def __init__(self, clock: FakeClock, per_second: dict[str, tuple[float, float]],
                 dies_at: float) -> None:
        super().__init__(clock, per_second)
        self.dies_at = dies_at

    def snapshot(self, tracks: Sequence[str]) -> dict[str, TrackSnapshot]:
        now = self.clock.now
        if now <= self.dies_at:
            return super().snapshot(tracks)
        self.clock.now = self.dies_at
        frozen = super().snapshot(["stable"])
        self.clock.now = now
        return {**super().snapshot(tracks), "stable": frozen["stable"]}


def test_controller_does_not_promote_past_a_stable_that_died_mid_bake() -> None:
    clock = FakeClock()
    config = DeployConfig(steps=[10, 50, 100], bake_seconds=10, min_requests=5,
                          scrape_interval_seconds=1.0, max_extra_bake_seconds=5)
    traffic = RecordingTraffic()
    report = CanaryController(traffic, DyingStableSource(
        clock, {"stable": (10, 0.04), "canary": (3, 0.04)}, dies_at=4.0),
        config, clock=clock, sleep=clock.sleep).run()
    assert report.outcome == "INCONCLUSIVE" and traffic.weights[0] == 10
    assert 100 not in traffic.weights[:-1]
    reasons = report.steps[0].analysis.reasons
    assert any("stable_alive" in reason for reason in reasons), reasons


@pytest.mark.parametrize("overrides", [{"p99_min_requests": 50},
                                       {"max_stable_error_rate": 1.5}])
def test_tail_and_stable_fields_are_validated(overrides: dict[str, object]) -> None:
    with pytest.raises(StageError) as caught:
        DeployConfig(**overrides)  # type: ignore[arg-type]
    assert caught.value.code == "CONFIG_INVALID"
