"""The one place that talks to `flytekit.current_context()`.

Stage code never imports this; the thin `@task` bodies do. Everything here degrades to a
sensible local value outside a Flyte execution, so stage functions stay testable alone.
"""

from __future__ import annotations

import html as html_lib
import json
import logging
import os
import re
import secrets
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import flytekit
from flytekit.deck import DeckField

from common.fs import SHARED_FILE_MODE, atomic_write_text
from common.html import page, style_tag
from common.logging_setup import setup_quiet_console
from common.redact import redact, redact_text
from common.settings import load_settings
from tasks.overview import (
    OVERVIEW_NAME,
    StageFacts,
    StageSummary,
    Status,
    iso_utc,
    summary_path,
    utc_now,
    write_overview,
)

logger = logging.getLogger(__name__)


def memoize_dataclass_literal_types() -> None:
    """Compute flytekit's literal type of each dataclass once per process.

    flytekit derives a dataclass's `LiteralType` (with its JSON schema, through mashumaro, which
    builds a throwaway dataclass for every field default) each time the type appears in a task
    or workflow interface. The stage configs appear in several interfaces (`resolve_config`'s
    output, each stage's input, the workflow), so importing the workflow, which every
    `pyflyte run` does, derived them 74 times for about 15 types: ~1 s on 2 cores. The result
    depends only on the type, so each is derived once and every caller gets its own copy.
    """
    from flytekit.core.type_engine import DataclassTransformer
    from flytekit.models.types import LiteralType

    derive = DataclassTransformer.get_literal_type
    if getattr(derive, "shipyard_memoized", False):
        return
    derived: dict[Any, LiteralType] = {}

    def get_literal_type(self: DataclassTransformer, t: Any) -> LiteralType:
        try:
            found = derived.get(t)
        except TypeError:  # an unhashable annotation: derive it as flytekit does
            return derive(self, t)
        if found is None:
            found = derived[t] = derive(self, t)
        return LiteralType.from_flyte_idl(found.to_flyte_idl())  # never share one object

    get_literal_type.shipyard_memoized = True  # type: ignore[attr-defined]
    get_literal_type.flytekit_original = derive  # type: ignore[attr-defined]
    DataclassTransformer.get_literal_type = get_literal_type


# Before any task module defines its tasks (each imports this module first).
memoize_dataclass_literal_types()


# "<run id> <pid>": the local run id and the process that made it (see `_local_run_id`).
LOCAL_RUN_ENV = "SHIPYARD_LOCAL_RUN"
PIPELINE_LOG_NAME = "pipeline.log"

# The Flyte decks every stage task renders besides its own report. flytekit's default adds
# DeckField.DEPENDENCIES, which runs `pip list` and `pip freeze` in a subprocess for every
# task execution: about 2 s each on 2 cores, in every re-run of the uncached stages, and a
# "new release of pip" notice on the console. The installed versions are fixed by the hashed
# lock (requirements/lock-cpu.txt), and the ones that shape a stage's output are in its cache
# version and the provenance, so the deck would only repeat them.
STAGE_DECK_FIELDS = (DeckField.SOURCE_CODE, DeckField.TIMELINE, DeckField.INPUT,
                     DeckField.OUTPUT)


# Credentials a task asks the cluster's secret manager for (`secret_requests`). Each is mounted
# as the environment variable its reader already uses locally, so there is one path: the
# judge's key as JudgeConfig.api_key_env's default (read in tasks/evaluate.py), MLflow's
# credentials as the variables MLflow itself reads. Nothing calls current_context().secrets.
SECRET_GROUP = "shipyard"
JUDGE_API_KEY_ENV = "SHIPYARD_JUDGE_API_KEY"  # eval.config.JudgeConfig.api_key_env
MLFLOW_CREDENTIAL_ENVS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                          "MLFLOW_TRACKING_TOKEN")


def _env_secret(env_var: str) -> flytekit.Secret:
    """The secret `<SECRET_GROUP>/<env var, lower-case, dashes>`, mounted as `env_var`."""
    return flytekit.Secret(group=SECRET_GROUP, key=env_var.lower().replace("_", "-"),
                           env_var=env_var,
                           mount_requirement=flytekit.Secret.MountType.ENV_VAR)


JUDGE_SECRETS = [_env_secret(JUDGE_API_KEY_ENV)]
MLFLOW_SECRETS = [_env_secret(name) for name in MLFLOW_CREDENTIAL_ENVS]


def execution_id() -> str:
    """`project:domain:name` of the running Flyte execution (``local`` values when local)."""
    try:
        ex = flytekit.current_context().execution_id
    except Exception:  # no Flyte context at all (plain Python call)
        return "none:none:none"
    return f"{ex.project}:{ex.domain}:{ex.name}"


def working_directory() -> Path:
    """The task's scratch directory: Flyte's per-execution working directory, which it cleans
    up after the task; the system temp dir outside a Flyte execution."""
    try:
        return Path(flytekit.current_context().working_directory)
    except Exception:  # no Flyte context at all (plain Python call)
        return Path(tempfile.gettempdir())


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


def quiet_console() -> Path:
    """Call first in every task body: third-party warnings, logs and progress bars go to this
    run's ``pipeline.log``; the console keeps Shipyard's own lines. Returns the log's path."""
    return setup_quiet_console(run_reports_dir() / PIPELINE_LOG_NAME)


def publish_report(stage: str, title: str, body_html: str,
                   json_path: Path | None = None, *, status: Status = "succeeded",
                   started: float | None = None, facts: StageFacts | None = None,
                   error: BaseException | None = None) -> Path:
    """Show `body_html` as a Flyte Deck and also write it as a standalone HTML file in this
    run's report directory, with the stage's JSON report (`json_path`) copied beside it.

    Beside them goes ``<stage>.summary.json`` (`status`, the stage's start time `started` in
    epoch seconds, its key numbers `facts`, the `error`), and the run overview ``index.html``
    is rebuilt from every summary of the run. The file lets a user without a Flyte cluster
    open the same report the Flyte UI shows; its path is printed and returned.

    Everything published is redacted first (`common.redact`): no deck, page, JSON copy or
    summary carries a credential from a URI (a tracking URI, a judge URL, a data URI).
    """
    title, body_html = redact_text(title), redact_text(body_html)
    flytekit.Deck(title, style_tag() + body_html)
    run_dir = run_reports_dir()
    path = run_dir / f"{stage}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, page(title, body_html))
    if json_path is not None:
        report_json = redact_text(json_path.read_text(encoding="utf-8"))
        _write_atomically(path.with_suffix(".json"), report_json)
    logger.info("%s report written to %s", stage, path)
    print(f"[shipyard] {stage} report: {path}", flush=True)
    summary = StageSummary(
        stage=stage, title=title, status="failed" if error is not None else status,
        started_at=None if started is None else iso_utc(started), finished_at=utc_now(),
        report=path.name, facts=_redacted_facts(facts or StageFacts()),
        error=None if error is None else _error_text(error))
    _refresh_overview(run_dir, summary)
    return path


def _refresh_overview(run_dir: Path, summary: StageSummary) -> None:
    # The overview is a convenience: a failure to write it is logged, never raised.
    try:
        _write_atomically(summary_path(run_dir, summary.stage),
                          json.dumps(summary.to_dict(), indent=1, ensure_ascii=False) + "\n")
        is_new = not (run_dir / OVERVIEW_NAME).exists()
        overview = write_overview(run_dir, run_id())
    except (OSError, ValueError) as exc:
        logger.warning("could not update the run overview in %s: %s", run_dir, exc)
        return
    if is_new:
        print(f"[shipyard] run overview: {overview}", flush=True)


def _redacted_facts(facts: StageFacts) -> StageFacts:
    return replace(facts, headline=redact_text(facts.headline), facts=redact(facts.facts),
                   table=redact(facts.table))


def _error_text(error: BaseException) -> str:
    code = getattr(error, "code", None)
    message = redact_text(getattr(error, "message", None) or str(error))
    return f"{code}: {message}" if code else f"{type(error).__name__}: {message}"


def _write_atomically(path: Path, text: str) -> None:
    atomic_write_text(path, text, mode=SHARED_FILE_MODE)


# Made on import, so that the `pyflyte run` process holds its run id before it spawns the
# train task's workers (validate_data, which reports first, may be a cache hit).
_local_run_id()


def error_html(error: BaseException) -> str:
    """A stage error as the body of its report, for stages with nothing richer to show."""
    return (f"<h2 class='verdict-fail'>Failed</h2>"
            f"<pre>{html_lib.escape(_error_text(error))}</pre>")
