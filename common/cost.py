"""Prices, and what a stage's resource use costs.

`CostConfig` is the preset's ``cost:`` section (resolved once by ``tasks/resolve.py``);
prices are in USD. Turning use into money is pure arithmetic here; `stage_cost` is the task
edge's context manager: it measures the body (common/resources.py), prices the use, adds a
``cost`` object to the stage's ``<stage>.summary.json`` (read by the run overview), sums every
stage of the run into ``cost.json`` beside it and logs ``cost_usd_<stage>`` to the stage's
MLflow run when the body names one.

The judge's tokens are priced by ``eval.judge.price_per_1k_prompt_tokens`` /
``..._completion_tokens`` (eval/config.py, already reported in the eval report's judge usage);
the evaluate task passes that amount in as `extra_usd`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import StageError
from common.fs import SHARED_FILE_MODE, atomic_write_text
from common.resources import ResourceUse, measure

logger = logging.getLogger(__name__)

COST_FILE = "cost.json"
SUMMARY_SUFFIX = ".summary.json"  # tasks/overview.py writes <stage>.summary.json
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class CostConfig:
    # USD per GPU-hour (allocation: one GPU held for an hour, busy or not)
    gpu_hour: float = 0.0
    # USD per CPU-hour (one core busy for an hour: CPU-seconds, not cores held)
    cpu_hour: float = 0.0
    # USD per hour of one serving replica; 0 means gpu_hour (one GPU per vLLM pod, as in
    # infra/k8s/overlays/gpu)
    serving_replica_hour: float = 0.0

    def __post_init__(self) -> None:
        for name in ("gpu_hour", "cpu_hour", "serving_replica_hour"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise StageError("CONFIG_INVALID",
                                 f"cost.{name}={value!r}: a price is a finite number >= 0 "
                                 "(USD per hour).")

    @property
    def replica_hour(self) -> float:
        return self.serving_replica_hour or self.gpu_hour


def compute_usd(use: ResourceUse, prices: CostConfig) -> float:
    """CPU-seconds and GPU-seconds at the hourly prices."""
    return (use.cpu_seconds * prices.cpu_hour
            + use.gpu_seconds * prices.gpu_hour) / SECONDS_PER_HOUR


def usd_per_million_tokens(usd_per_hour: float, tokens_per_second: float) -> float:
    """Serving price of 1M generated tokens at a sustained throughput:
    $/1M = $/h / (tokens/s x 3600) x 1e6."""
    if usd_per_hour < 0 or not math.isfinite(usd_per_hour):
        raise ValueError(f"usd_per_hour must be a finite number >= 0, not {usd_per_hour!r}")
    if tokens_per_second <= 0 or not math.isfinite(tokens_per_second):
        raise ValueError(f"tokens_per_second must be a finite number > 0, not "
                         f"{tokens_per_second!r}")
    return usd_per_hour / (tokens_per_second * SECONDS_PER_HOUR) * 1e6


def throughput_from_load(load: dict[str, Any] | None) -> float | None:
    """Generated tokens/s from a decision record's ``load`` numbers, where it has them
    (``generated_tokens_per_second``, or ``generated_tokens`` over ``wall_seconds``)."""
    if not load:
        return None
    rate = load.get("generated_tokens_per_second")
    if rate is None and load.get("generated_tokens") and load.get("wall_seconds"):
        rate = float(load["generated_tokens"]) / float(load["wall_seconds"])
    return float(rate) if rate and float(rate) > 0 else None


@dataclass
class StageCost:
    stage: str
    use: ResourceUse = field(default_factory=ResourceUse)
    # money the stage spent outside its own process (the judge's API tokens)
    extra_usd: float = 0.0
    extra_usd_basis: str = ""
    # where known: the MLflow run to log cost_usd_<stage> to
    mlflow_run_id: str | None = None
    mlflow_tracking_uri: str | None = None
    # serving: generated tokens/s measured at the SLO (deploy only)
    serving_tokens_per_second: float | None = None

    def to_dict(self, prices: CostConfig) -> dict[str, Any]:
        compute = compute_usd(self.use, prices)
        out: dict[str, Any] = {
            "cpu_seconds": round(self.use.cpu_seconds, 3),
            "gpu_seconds": round(self.use.gpu_seconds, 3),
            "gpu_count": self.use.gpu_count,
            "gpu_basis": self.use.gpu_basis,
            "wall_seconds": round(self.use.wall_seconds, 3),
            "peak_memory_bytes": self.use.peak_memory_bytes,
            "compute_usd": compute,
            "extra_usd": self.extra_usd,
            "extra_usd_basis": self.extra_usd_basis,
            "total_usd": compute + self.extra_usd,
            "prices": asdict(prices),
        }
        if self.serving_tokens_per_second and prices.replica_hour > 0:
            out["serving_tokens_per_second"] = self.serving_tokens_per_second
            out["serving_usd_per_1m_tokens"] = usd_per_million_tokens(
                prices.replica_hour, self.serving_tokens_per_second)
        return out


def record_stage_cost(run_dir: Path, cost: StageCost, prices: CostConfig) -> dict[str, Any]:
    """Add ``cost`` to ``<stage>.summary.json`` (created if the stage wrote none) and rewrite
    the run's ``cost.json``. Never raises for I/O: cost reporting must not fail a stage."""
    fields = cost.to_dict(prices)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        summary_file = run_dir / f"{cost.stage}{SUMMARY_SUFFIX}"
        summary: dict[str, Any] = {}
        if summary_file.exists():
            summary = json.loads(summary_file.read_text())
        summary["cost"] = fields
        _write_json(summary_file, summary)
        write_run_cost(run_dir)
    except (OSError, ValueError) as exc:
        logger.warning("could not record the cost of %s in %s: %s", cost.stage, run_dir, exc)
    return fields


def run_cost(run_dir: Path) -> dict[str, Any]:
    """Every stage's cost in the run directory, and their sum."""
    stages: dict[str, Any] = {}
    for path in sorted(run_dir.glob(f"*{SUMMARY_SUFFIX}")):
        try:
            fields = json.loads(path.read_text()).get("cost")
        except (OSError, ValueError):
            continue
        if isinstance(fields, dict):
            stages[path.name[: -len(SUMMARY_SUFFIX)]] = fields
    total = {key: sum(float(s.get(key) or 0.0) for s in stages.values())
             for key in ("cpu_seconds", "gpu_seconds", "compute_usd", "extra_usd", "total_usd")}
    return {"stages": stages, "total": total}


def write_run_cost(run_dir: Path) -> Path:
    path = run_dir / COST_FILE
    _write_json(path, run_cost(run_dir))
    return path


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n",
                      mode=SHARED_FILE_MODE)


def _log_mlflow(cost: StageCost, fields: dict[str, Any]) -> None:
    if not (cost.mlflow_run_id and cost.mlflow_tracking_uri):
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=cost.mlflow_tracking_uri)
        metrics = {f"cost_usd_{cost.stage}": fields["total_usd"],
                   f"cpu_seconds_{cost.stage}": fields["cpu_seconds"],
                   f"gpu_seconds_{cost.stage}": fields["gpu_seconds"]}
        if "serving_usd_per_1m_tokens" in fields:
            metrics["serving_usd_per_1m_tokens"] = fields["serving_usd_per_1m_tokens"]
        for key, value in metrics.items():
            client.log_metric(cost.mlflow_run_id, key, float(value))
    except Exception as exc:
        logger.warning("could not log the cost of %s to MLflow: %s", cost.stage, exc)


@contextmanager
def stage_cost(stage: str, run_dir: Path, prices: CostConfig, *,
               record: bool = True) -> Iterator[StageCost]:
    """Measure a task body and record what it cost at `prices`, the run's `cost:` section
    (a typed input of every stage task: it reaches a pod that shares nothing else with the
    run). See the module docstring. The body may
    set `extra_usd`, `mlflow_run_id` / `mlflow_tracking_uri` and
    `serving_tokens_per_second` on the yielded object. `record=False` measures only (the
    train task's ranks other than 0: rank 0 records, so its process is what is counted)."""
    cost = StageCost(stage)
    try:
        with measure() as use:
            cost.use = use
            yield cost
    finally:
        if record:
            fields = record_stage_cost(run_dir, cost, prices)
            _log_mlflow(cost, fields)
            logger.info("%s: %.1f CPU-s, %.1f GPU-s, $%.6f", stage, fields["cpu_seconds"],
                        fields["gpu_seconds"], fields["total_usd"])
