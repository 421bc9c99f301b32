"""The layout of `SHIPYARD_HOME`: the one place that names what lives under it.

Every module that reads or writes local state asks `HomeLayout` for the path, so moving or
adding a directory is one edit here (and one line in docs/getting-started.md, which
tests/unit/test_layout.py keeps in step).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# name under SHIPYARD_HOME -> what it holds
ENTRIES: dict[str, str] = {
    "mlflow.db": "the local MLflow tracking and registry store (unless MLFLOW_TRACKING_URI)",
    "mlartifacts": "MLflow artifacts of the local store",
    "checkpoints": "training checkpoints, one directory per run key",
    "base-models": "pretrained bases converted from their sources, one per digest",
    "reports": "one directory of stage reports per pipeline run",
    "keys": "the signing key pair, the local trust policy, the checkpoint HMAC key",
    "eval-cache": "cached model answers and judge calls (bounded)",
    "deployments": "one directory per deployment: state, decision records, history",
    "venvs": "the vLLM CPU virtual environment",
    "logs": "`shipyard run` logs and engine logs (logs/engines)",
}


@dataclass(frozen=True)
class HomeLayout:
    home: Path

    @property
    def mlflow_db(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlartifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"

    @property
    def base_models_dir(self) -> Path:
        return self.home / "base-models"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    def run_reports_dir(self, run_id: str) -> Path:
        """One directory per pipeline run: every stage of the run writes its reports here."""
        return self.reports_dir / run_id

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def eval_cache_dir(self) -> Path:
        return self.home / "eval-cache"

    @property
    def deployments_dir(self) -> Path:
        return self.home / "deployments"

    def deployment_dir(self, name: str) -> Path:
        return self.deployments_dir / name

    @property
    def venvs_dir(self) -> Path:
        return self.home / "venvs"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def engine_logs_dir(self) -> Path:
        return self.logs_dir / "engines"
