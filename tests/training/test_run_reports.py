"""Reports: every stage of one local pipeline run writes into one directory of its own.

Locally `pyflyte run` runs every task in its own process except train, whose body runs in
torch-elastic worker processes; the workflow below has both kinds, like the pipeline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flytekit import task, workflow
from flytekitplugins.kfpytorch import Elastic

from tasks.flyte_adapter import LOCAL_RUN_ENV, publish_report, run_id

pytestmark = pytest.mark.integration

LOCAL_RUN_ID = re.compile(r"^local-\d{8}-\d{6}-[0-9a-f]{6}$")


@task
def report_in_process() -> str:
    return str(publish_report("validate_data", "Validation", "<p>ok</p>"))


@task(task_config=Elastic(nnodes=1, nproc_per_node=1, max_restarts=0, monitor_interval=1,
                          increase_shared_mem=False))
def report_in_elastic_worker() -> str:
    return str(publish_report("train", "Training", "<p>ok</p>"))


@workflow
def two_stage_pipeline() -> tuple[str, str]:
    return report_in_process(), report_in_elastic_worker()


@pytest.fixture
def shipyard_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHIPYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLYTE_LOCAL_CACHE_ENABLED", "false")
    return tmp_path / "home"


def test_all_stages_of_a_local_run_report_into_one_directory_of_their_own(
    shipyard_home: Path,
) -> None:
    validate_report, train_report = (Path(p) for p in two_stage_pipeline())

    run_dir = shipyard_home / "reports" / run_id()
    assert LOCAL_RUN_ID.match(run_id()), run_id()
    assert validate_report == run_dir / "validate_data.html"
    assert train_report == run_dir / "train.html"  # written by the elastic worker
    assert "<h1>Training</h1>" in train_report.read_text()
    assert sorted(p.name for p in (shipyard_home / "reports").iterdir()) == [run_id()]


def test_another_pyflyte_run_gets_a_new_directory_and_its_elastic_workers_share_it(
    shipyard_home: Path,
) -> None:
    """A process that inherited this run's id from us is another run (a new id), unless it is
    a torch-elastic worker we started (it keeps ours)."""
    this_run = run_id()
    assert os.environ[LOCAL_RUN_ENV] == f"{this_run} {os.getpid()}"

    def child_run_id(extra_env: dict[str, str]) -> str:
        code = "from tasks.flyte_adapter import run_id; print(run_id())"
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **extra_env},
                             capture_output=True, text=True, check=True, timeout=120)
        return out.stdout.strip().splitlines()[-1]

    other_run = child_run_id({})
    assert LOCAL_RUN_ID.match(other_run) and other_run != this_run
    assert child_run_id({"TORCHELASTIC_RUN_ID": "local"}) == this_run
