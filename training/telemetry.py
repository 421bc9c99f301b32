"""Per-step telemetry: throughput, MFU, peak memory, and the MLflow run that records them."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from common.redact import redact, redact_text

# Dense bf16 peak FLOP/s per device (vendor data sheets, no sparsity). MFU is reported only
# for devices listed here; on CPU it is not reported at all.
PEAK_BF16_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe card is 756e12 and is matched first below
    "H100 PCIe": 756e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
}


def peak_flops_per_second(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_FLOPS[key]
    return None


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


class MlflowLogger:
    """Rank 0's MLflow run for the training stage (resumed runs reopen the same run id)."""

    def __init__(
        self,
        tracking_uri: str,
        artifact_root: Path,
        experiment: str,
        run_id: str | None,
        params: dict[str, Any],
    ) -> None:
        import mlflow

        self._mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            location = None
            if tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:"):
                artifact_root.mkdir(parents=True, exist_ok=True)
                location = artifact_root.as_uri()
            experiment_id = mlflow.create_experiment(experiment, artifact_location=location)
        else:
            experiment_id = exp.experiment_id
        self.run = mlflow.start_run(run_id=run_id, experiment_id=experiment_id,
                                    run_name=None if run_id else "train")
        if run_id is None:
            # redacted before truncation: data and checkpoint URIs may carry credentials
            mlflow.log_params({k: redact_text(str(v))[:500] for k, v in params.items()})
        self._client = mlflow.MlflowClient(tracking_uri)
        self._pending: list[Any] = []

    @property
    def run_id(self) -> str:
        return str(self.run.info.run_id)

    # Metrics are buffered and written in one batch every this many steps: a write per step,
    # even MLflow's asynchronous one, cost ~12% of a tiny-model step on 2 CPU cores
    # (bench/train_step.py); one batch per 10 steps costs about 1%.
    flush_every_steps = 10

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now_ms, step) for k, v in metrics.items())
        if step % self.flush_every_steps == 0:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._client.log_batch(self.run_id, metrics=self._pending)
            self._pending = []

    def set_tag(self, key: str, value: str) -> None:
        self._mlflow.set_tag(key, redact_text(value))

    def log_json(self, payload: Any, name: str) -> None:
        self._mlflow.log_text(json.dumps(redact(payload), indent=1, sort_keys=True), name)

    def log_artifacts(self, local_dir: Path, artifact_path: str) -> None:
        self._mlflow.log_artifacts(str(local_dir), artifact_path)

    def log_figure(self, figure: Any, name: str) -> None:
        self._mlflow.log_figure(figure, name)

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        self._mlflow.end_run(status=status)
