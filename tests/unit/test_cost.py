"""Cost arithmetic (common/cost.py) and the resource measurement at the task edge
(common/resources.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.config import build_config
from common.cost import (
    CostConfig,
    StageCost,
    compute_usd,
    record_stage_cost,
    run_cost,
    stage_cost,
    throughput_from_load,
    usd_per_million_tokens,
)
from common.errors import StageError
from common.resources import ResourceUse, measure

pytestmark = pytest.mark.unit

prices_st = st.floats(min_value=0, max_value=1e4, allow_nan=False)
positive_rate = st.floats(min_value=1e-3, max_value=1e7, allow_nan=False)


def test_usd_per_million_tokens_worked_example() -> None:
    # one H100 at $4/h serving 2,000 tokens/s: 7.2 M tokens per hour, $0.5556 per 1M
    assert usd_per_million_tokens(4.0, 2000.0) == pytest.approx(4.0 / 7.2)
    assert usd_per_million_tokens(3.6, 1000.0) == pytest.approx(1.0)
    assert usd_per_million_tokens(0.0, 10.0) == 0.0


@given(prices_st, positive_rate)
def test_usd_per_million_tokens_pays_back_the_hour(usd_per_hour: float, rate: float) -> None:
    per_million = usd_per_million_tokens(usd_per_hour, rate)
    tokens_per_hour = rate * 3600
    assert per_million * tokens_per_hour / 1e6 == pytest.approx(usd_per_hour, rel=1e-9, abs=1e-12)


@given(prices_st, positive_rate, st.floats(min_value=1.01, max_value=100))
def test_more_throughput_is_cheaper_per_token(usd_per_hour: float, rate: float,
                                              factor: float) -> None:
    assert usd_per_million_tokens(usd_per_hour, rate * factor) <= \
        usd_per_million_tokens(usd_per_hour, rate)


@pytest.mark.parametrize("rate", [0.0, -1.0, math.nan, math.inf])
def test_usd_per_million_tokens_refuses_a_rate_that_is_not_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="tokens_per_second"):
        usd_per_million_tokens(1.0, rate)


@given(st.floats(min_value=0, max_value=1e6), st.floats(min_value=0, max_value=1e6),
       prices_st, prices_st)
def test_compute_cost_is_linear_in_seconds_and_prices(cpu_s: float, gpu_s: float,
                                                      cpu_hour: float, gpu_hour: float) -> None:
    use = ResourceUse(cpu_seconds=cpu_s, gpu_seconds=gpu_s)
    got = compute_usd(use, CostConfig(gpu_hour=gpu_hour, cpu_hour=cpu_hour))
    assert got == pytest.approx(cpu_s / 3600 * cpu_hour + gpu_s / 3600 * gpu_hour)
    assert got >= 0


def test_an_hour_of_one_gpu_costs_the_gpu_hour() -> None:
    use = ResourceUse(cpu_seconds=7200, gpu_seconds=3600)
    assert compute_usd(use, CostConfig(gpu_hour=2.5, cpu_hour=0.05)) == pytest.approx(2.6)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_a_negative_or_non_finite_price_is_refused(bad: float) -> None:
    with pytest.raises(StageError) as caught:
        CostConfig(gpu_hour=bad)
    assert caught.value.code == "CONFIG_INVALID"


def test_the_preset_section_builds_a_cost_config() -> None:
    prices = build_config(CostConfig, "cost", {"gpu_hour": 3.0, "cpu_hour": 0.04})
    assert prices.replica_hour == 3.0  # serving defaults to one GPU per replica
    assert build_config(CostConfig, "cost", {"gpu_hour": 3.0, "serving_replica_hour": 5.0}
                        ).replica_hour == 5.0
    with pytest.raises(StageError) as caught:
        build_config(CostConfig, "cost", {"gpu_hours": 3.0})
    assert caught.value.code == "CONFIG_UNKNOWN_KEY"


def test_throughput_from_the_decision_record_s_load_numbers() -> None:
    assert throughput_from_load(None) is None
    assert throughput_from_load({"sent": 10, "ok": 10}) is None  # no token counts recorded
    assert throughput_from_load({"generated_tokens_per_second": 1500.0}) == 1500.0
    assert throughput_from_load({"generated_tokens": 3000, "wall_seconds": 2.0}) == 1500.0


def test_stage_costs_go_into_their_summaries_and_sum_into_cost_json(tmp_path: Path) -> None:
    prices = CostConfig(gpu_hour=4.0, cpu_hour=0.036)
    (tmp_path / "train.summary.json").write_text(json.dumps({"stage": "train", "headline": "x"}))
    record_stage_cost(tmp_path, StageCost("train", ResourceUse(cpu_seconds=100, gpu_seconds=360,
                                                                gpu_count=1)), prices)
    evaluated = StageCost("evaluate", ResourceUse(cpu_seconds=1000), extra_usd=0.25)
    record_stage_cost(tmp_path, evaluated, prices)
    deployed = StageCost("deploy_canary", ResourceUse(cpu_seconds=10),
                         serving_tokens_per_second=2000.0)
    fields = record_stage_cost(tmp_path, deployed, prices)
    assert fields["serving_usd_per_1m_tokens"] == pytest.approx(4.0 / 7.2)

    train = json.loads((tmp_path / "train.summary.json").read_text())
    assert train["headline"] == "x"  # the report's own fields are kept
    assert train["cost"]["total_usd"] == pytest.approx(0.001 + 0.4)
    total = json.loads((tmp_path / "cost.json").read_text())
    assert total == run_cost(tmp_path)
    assert set(total["stages"]) == {"train", "evaluate", "deploy_canary"}
    assert total["total"]["cpu_seconds"] == pytest.approx(1110)
    assert total["total"]["total_usd"] == pytest.approx(0.001 + 0.4 + 0.01 + 0.25 + 0.0001)


def test_without_prices_use_is_recorded_at_zero_cost(tmp_path: Path) -> None:
    use = StageCost("validate_data", ResourceUse(cpu_seconds=5))
    fields = record_stage_cost(tmp_path, use, CostConfig())
    assert fields["cpu_seconds"] == 5 and fields["total_usd"] == 0


def test_measure_counts_cpu_of_the_process_and_its_children(tmp_path: Path) -> None:
    import subprocess
    import sys

    with measure() as use:
        sum(i * i for i in range(2_000_000))
        subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"],
                       check=True)
    assert use.cpu_seconds > 0.1
    assert use.wall_seconds > 0 and use.peak_memory_bytes > 10 * 2**20
    assert use.gpu_seconds == use.wall_seconds * use.gpu_count


def test_stage_cost_records_also_when_the_body_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), stage_cost("register", tmp_path, CostConfig()):
        sum(i * i for i in range(500_000))
        raise RuntimeError("boom")
    summary = json.loads((tmp_path / "register.summary.json").read_text())
    assert summary["cost"]["cpu_seconds"] > 0


def test_stage_cost_with_record_false_writes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with stage_cost("train", run_dir, CostConfig(), record=False):
        pass
    assert not run_dir.exists()
