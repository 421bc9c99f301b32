"""The one place that talks to `flytekit.current_context()`.

Stage code never imports this; the thin `@task` bodies do. Everything here degrades to a
sensible local value outside a Flyte execution, so stage functions stay testable alone.
"""

from __future__ import annotations

import html as html_lib
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import flytekit

from common.settings import load_settings

logger = logging.getLogger(__name__)


# "<run id> <pid>": the local run id and the process that made it (see `_local_run_id`).
LOCAL_RUN_ENV = "SHIPYARD_LOCAL_RUN"


def execution_id() -> str:
    """`project:domain:name` of the running Flyte execution (``local`` values when local)."""
    try:
        ex = flytekit.current_context().execution_id
    except Exception:  # no Flyte context at all (plain Python call)
        return "none:none:none"
    return f"{ex.project}:{ex.domain}:{ex.name}"


def is_remote_execution() -> bool:
    # Locally the name is "local" (pyflyte run's process) or empty (its torch-elastic
    # workers, which flytekit sets up without an execution id); "none" outside Flyte.
    return execution_id().rpartition(":")[2] not in ("", "local", "none")


def run_id() -> str:
    """The pipeline run this task belongs to; all its stages report into one directory.

    On a cluster the Flyte execution (``project-domain-name``); locally an id made once per
    `pyflyte run` process, e.g. ``local-20261130-052429-3f9a1c``.
    """
    if is_remote_execution():
        return re.sub(r"[^A-Za-z0-9_.-]", "_", execution_id().replace(":", "-"))
    return _local_run_id()


def _local_run_id() -> str:
    """One id per local `pyflyte run`, also seen by the train task's torch-elastic workers.

    Locally all tasks run in the `pyflyte run` process, except train's body, which runs in
    worker processes it spawns. The id travels to them in LOCAL_RUN_ENV, tagged with the pid
    of the process that made it: a worker (parent pid = that pid) adopts it; any other
    process that merely inherited the variable (a `pyflyte run` started by a test or script
    that imported this module) makes its own, so two runs never share a directory.
    """
    inherited_id, _, owner = os.environ.get(LOCAL_RUN_ENV, "").partition(" ")
    is_elastic_worker = "TORCHELASTIC_RUN_ID" in os.environ
    if inherited_id and (owner == str(os.getpid())
                         or (is_elastic_worker and owner == str(os.getppid()))):
        return inherited_id
    new_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    os.environ[LOCAL_RUN_ENV] = f"{new_id} {os.getpid()}"
    return new_id


def run_reports_dir() -> Path:
    """``<SHIPYARD_HOME>/reports/<run id>/``: where every stage of this run writes reports."""
    return load_settings().run_reports_dir(run_id())


def publish_report(stage: str, title: str, body_html: str,
                   json_path: Path | None = None) -> Path:
    """Show `body_html` as a Flyte Deck and also write it as a standalone HTML file in this
    run's report directory, with the stage's JSON report (`json_path`) copied beside it.

    The file lets a user without a Flyte cluster open the same report the Flyte UI shows;
    its path is logged and returned.
    """
    flytekit.Deck(title, body_html)
    path = run_reports_dir() / f"{stage}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, lambda tmp: tmp.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html_lib.escape(title)}"
        f"</title></head><body><h1>{html_lib.escape(title)}</h1>{body_html}</body></html>"
    ))
    if json_path is not None:
        _write_atomically(path.with_suffix(".json"), lambda tmp: shutil.copyfile(json_path, tmp))
    logger.warning("shipyard: %s report written to %s", stage, path)
    print(f"[shipyard] {stage} report: {path}", flush=True)
    return path


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    tmp.replace(path)


# Made on import, so that the `pyflyte run` process holds its run id before it spawns the
# train task's workers (validate_data, which reports first, may be a cache hit).
_local_run_id()


def error_html(error: BaseException) -> str:
    """A stage error as the body of its report, for stages with nothing richer to show."""
    return f"<pre>{html_lib.escape(str(error))}</pre>"
