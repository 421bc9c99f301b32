"""Where Shipyard keeps local state, read from the environment in exactly one place.

Local defaults (no server to install):
  - state directory: ``$SHIPYARD_HOME`` or ``~/.shipyard``, laid out by `common.layout`
  - MLflow: ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<home>/mlflow.db`` with artifacts under
    ``<home>/mlartifacts``
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.layout import HomeLayout

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The project's top-level packages, in layer order (pyproject's import-linter layers): the
# ones setuptools installs and the image copies. The one list: Python code imports it, and
# tests/unit/test_packages.py checks pyproject.toml and the Dockerfile against it.
SHIPPED_PACKAGES = ("workflows", "tasks", "cli", "testing", "deploy", "eval", "serving",
                    "registry", "training", "data", "common")
# Packages that stay in the repository: benchmarks and tests.
REPO_ONLY_PACKAGES = ("bench", "tests")


@dataclass(frozen=True)
class Settings:
    home: Path
    mlflow_tracking_uri: str
    mlflow_artifact_root: Path

    @property
    def layout(self) -> HomeLayout:
        """Every path under `home` (deployments, keys, caches, logs...)."""
        return HomeLayout(self.home)

    # the three the stages ask for most, kept as shortcuts
    @property
    def reports_dir(self) -> Path:
        return self.layout.reports_dir

    def run_reports_dir(self, run_id: str) -> Path:
        """One directory per pipeline run: every stage of the run writes its reports here."""
        return self.layout.run_reports_dir(run_id)

    @property
    def checkpoints_dir(self) -> Path:
        return self.layout.checkpoints_dir

    @property
    def keys_dir(self) -> Path:
        return self.layout.keys_dir


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    home = Path(env.get("SHIPYARD_HOME") or Path.home() / ".shipyard").expanduser().resolve()
    return Settings(home=home, mlflow_tracking_uri=mlflow_tracking_uri(env, home),
                    mlflow_artifact_root=HomeLayout(home).mlartifacts_dir)


def mlflow_tracking_uri(environ: Mapping[str, str], home: Path) -> str:
    """`$MLFLOW_TRACKING_URI`, else the sqlite store in `home` (a CLI passes the home it shows
    in --help, unresolved)."""
    return environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{HomeLayout(home).mlflow_db}"
