"""Where a registration writes: the local store's registration lock, MLflow failures as
RegistryError, where a local store keeps artifacts, and when the build started.

Shared by the register stage (registry/stage.py) and model imports (registry/imports.py).
A remote tracking server has no lock we can take: see registry/stage.py's docstring for the
race that remains there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from common.locks import file_lock
from common.redact import redact_text
from registry import mlflow_registry as reg
from registry.errors import RegistryError

_SERVER_SCHEMES = ("http", "https", "databricks")


@contextmanager
def registration_lock(tracking_uri: str, name: str) -> Iterator[None]:
    """Serialize registrations of `name` on one local store (a blocking file lock next to the
    sqlite file or store directory; the kernel drops it when the holder dies). A tracking
    server gets no lock: see the module docstring for the race that remains there."""
    store = _local_store_dir(tracking_uri)
    if store is None:
        yield
        return
    lock_dir = store / ".shipyard-locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(name.encode()).hexdigest()[:16]
    with file_lock(lock_dir / f"register-{key}.lock"):
        yield


def _local_store_dir(tracking_uri: str) -> Path | None:
    """The directory holding a local store (sqlite file or file store); None for a server."""
    parts = urlsplit(tracking_uri)
    if parts.scheme == "sqlite":
        path = tracking_uri.removeprefix("sqlite:///")
        return None if path in ("", ":memory:") else Path("/" + path.lstrip("/")).parent
    if parts.scheme in ("", "file"):
        return Path(parts.path if parts.scheme else tracking_uri).expanduser()
    return None


@contextmanager
def mlflow_errors(tracking_uri: str) -> Iterator[None]:
    """Turn MLflow and I/O failures into RegistryError, the package's one error type."""
    from sqlalchemy.exc import SQLAlchemyError  # a locked or broken sqlite store

    try:
        yield
    except (MlflowException, OSError, SQLAlchemyError) as exc:
        raise RegistryError(
            "MLFLOW_ERROR", redact_text(
                f"MLflow at {tracking_uri} failed: {exc}. If the store is locked by another "
                "writer, retry when it is done: registration is idempotent by digest.")
        ) from exc


def run_start(client: MlflowClient, training_run_id: str | None, fallback: datetime) -> datetime:
    # The build started when training did; the training run knows when that was.
    if training_run_id is None:
        return fallback
    start_ms = reg.get_training_run(client, training_run_id).info.start_time
    return datetime.fromtimestamp(start_ms / 1000, tz=UTC) if start_ms else fallback


def artifact_location(tracking_uri: str, artifact_root: Path | str | None) -> str | None:
    # A tracking server decides where artifacts go (and may proxy them); a local store
    # gets our artifact root, or MLflow would write ./mlruns under the working directory.
    if artifact_root is None or urlsplit(tracking_uri).scheme in _SERVER_SCHEMES:
        return None
    root = str(artifact_root)
    return root if "://" in root else Path(root).expanduser().resolve().as_uri()
