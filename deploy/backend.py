"""Where a deployment's tracks run and how traffic is split (`Backend`), and how one is built
for a deploy action: the local processes behind the weighted router, or Kubernetes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from common.settings import Settings
from deploy.config import DeployConfig
from deploy.decision_record import DecisionRecord
from deploy.local_backend import LocalBackend
from deploy.metric_sources import MetricsSource
from deploy.model_ref import VerifiedModel
from serving.engine_choice import resolve_engine
from serving.router import FaultSpec
from serving.vllm_venv import vllm_venv_dir

logger = logging.getLogger(__name__)


class Backend(Protocol):
    """Where the tracks run and how traffic is split: everything the stage asks of them."""

    @property
    def endpoint(self) -> str:
        """OpenAI-compatible base URL clients use (append /v1)."""
        ...

    @property
    def engine_kind(self) -> str:
        """The engine serving the tracks ("vllm" or "local"), for the decision record."""
        ...

    @property
    def needs_load_generator(self) -> bool:
        """True when nothing but the stage sends requests during a rollout (a loopback
        router), so the stage drives load itself; False when real clients are the traffic."""
        ...

    def track_url(self, role: str) -> str | None:
        """Base URL that reaches only the engine of track `role` ("stable" or "canary"),
        around the traffic split, for checks before the track takes traffic; None where the
        stage cannot reach it (the reason is the backend's to document)."""
        ...

    def running_stable_version(self) -> str | None: ...
    def leftover_canary_version(self) -> str | None: ...
    def repair(self) -> list[str]: ...
    def start_stable(self, model: VerifiedModel) -> None: ...
    def start_canary(self, model: VerifiedModel) -> None: ...
    def set_canary_weight(self, percent: int) -> None: ...
    def inject_faults(self, canary: FaultSpec | None) -> None:
        """Set (or with None, clear) a fault drill on the canary track. A backend that
        cannot inject faults accepts None and raises CONFIG_INVALID for a FaultSpec."""
        ...

    def metrics_source(self) -> MetricsSource: ...
    def promote_canary(self) -> None: ...
    def rollback_canary(self) -> None: ...
    def describe(self) -> dict[str, Any]: ...
    def stop_command(self) -> str: ...
    def stop_all(self) -> object: ...


def build_backend(config: DeployConfig, settings: Settings, name: str,
                   verified: VerifiedModel, record: DecisionRecord) -> Backend:
    if config.backend == "kubernetes":
        from deploy.kubernetes_backend import KubernetesBackend

        assert config.prometheus_url and config.gateway_url  # DeployConfig checks
        record.note("engine: vllm on Kubernetes (the image in the overlay)")
        return KubernetesBackend.from_kubeconfig(
            Path(config.kustomize_overlay), namespace=config.namespace,
            endpoint=config.gateway_url, prometheus_url=config.prometheus_url)
    venv_dir = vllm_venv_dir(config.vllm_venv_dir, settings.home)
    kind, why = resolve_engine(config.engine, verified.model_dir, venv_dir)
    eager = config.enforce_eager and kind == "vllm"
    record.note(f"engine: {kind}{' (--enforce-eager)' if eager else ''} ({why})")
    return LocalBackend(settings.home, name, engine_kind=kind,
                        ready_timeout_seconds=config.engine_ready_timeout_seconds,
                        max_model_len=config.max_model_len, vllm_venv_dir=venv_dir,
                        enforce_eager=config.enforce_eager,
                        canary_lease_seconds=config.canary_lease())


def roll_back_leftover_canary(backend: Backend, record: DecisionRecord) -> None:
    """A deploy killed mid-rollout (SIGKILL: no cleanup ran) leaves its canary: take it out
    of traffic and stop it before anything else. A dead router is restarted first."""
    for note in backend.repair():
        record.note(note)
    leftover = backend.leftover_canary_version()
    if leftover is not None:
        record.note(f"a canary of version {leftover} was left by an interrupted deploy: "
                    "rolled back first")
        backend.rollback_canary()


def safe_rollback(backend: Backend) -> None:
    try:
        backend.rollback_canary()
    except Exception:  # already failing: keep the first error, log this one
        logger.exception("rollback after a failed rollout also failed")
