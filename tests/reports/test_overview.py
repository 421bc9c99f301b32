"""The run overview (reports/<run>/index.html): built from per-stage summaries, refreshed on
every publish_report, showing failed and missing stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.overview import load_summaries, render_overview
from tests.reports.conftest import RUN_ID, write_sample_run

pytestmark = pytest.mark.unit


def test_overview_shows_every_stage_its_status_duration_and_key_numbers(
    sample_run: Path,
) -> None:
    page = sample_run.read_text()
    assert f"Pipeline run {RUN_ID}" in page
    assert "1 stage(s) failed: register" in page
    assert "1,500 rows validated in 3 split(s)" in page          # validate: rows
    assert "1.97 M parameters" in page and "851 MiB" in page    # train: numbers for people
    assert "<svg class='chart'" in page and "loss curve" in page  # train: the loss curve
    assert "floor:shipyard_mc" in page                          # evaluate: the gate table
    assert "SELF_CHECK_FAILED" in page and "&lt;signature&gt;" in page  # register: the error
    assert "canary traffic" in page and "PASS (promoted)" in page  # deploy: timeline, verdict
    assert "1 min 08 s" in page                                 # train's duration
    for report in ("validate_data.html", "train.html", "evaluate.html", "register.html",
                   "deploy_canary.html"):
        assert f"href='{report}'" in page and (sample_run.parent / report).is_file()
    assert "e+0" not in page


def test_a_stage_without_a_summary_is_shown_as_missing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_sample_run(run_dir, failed_register=False)
    (run_dir / "train.summary.json").unlink()
    (run_dir / "deploy_canary.summary.json").write_text("{not json")  # never breaks the page
    page = render_overview("run", load_summaries(run_dir))
    assert page.count("class='status status-missing'") == 3  # train, register, deploy
    assert "none failed" in page


def test_publish_report_writes_the_page_the_summary_and_the_overview(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from common.errors import StageError
    from tasks import flyte_adapter

    monkeypatch.setattr(flyte_adapter, "run_id", lambda: "local-test-run")
    run_dir = tmp_path / "home" / ".shipyard" / "reports" / "local-test-run"
    error = StageError("DEPLOY_LOCKED", "another deploy holds shipyard-tiny")
    path = flyte_adapter.publish_report("deploy_canary", "Canary deployment",
                                        flyte_adapter.error_html(error), started=1.0e9,
                                        error=error)
    assert path == run_dir / "deploy_canary.html"
    assert "<style>" in path.read_text() and "DEPLOY_LOCKED" in path.read_text()
    summary = json.loads((run_dir / "deploy_canary.summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("DEPLOY_LOCKED: ")
    assert summary["started_at"] == "2001-09-09T01:46:40+00:00" and summary["duration_seconds"]
    overview = (run_dir / "index.html").read_text()
    assert "status-failed" in overview and "another deploy holds" in overview
    out = capsys.readouterr().out
    assert f"[shipyard] run overview: {run_dir / 'index.html'}" in out
