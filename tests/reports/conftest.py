"""A synthetic run directory: every stage's report page, summary and the overview, written by
the same code the tasks use (no pipeline run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.html import page
from data.report import overview_facts as data_facts
from deploy.report import overview_facts as deploy_facts
from deploy.report import report_html as deploy_html
from eval.report import overview_facts as eval_facts
from eval.report import render_html as eval_html
from tasks.overview import StageSummary, summary_path, write_overview
from tests.reports import samples
from training.report import training_report_html

RUN_ID = "local-20261130-052429-3f9a1c"
STARTED = "2026-11-30T05:24:29+00:00"


def _publish(run_dir: Path, summary: StageSummary, body: str) -> None:
    (run_dir / summary.report).write_text(page(summary.title, body))
    summary_path(run_dir, summary.stage).write_text(__import__("json").dumps(summary.to_dict()))


def write_sample_run(run_dir: Path, *, failed_register: bool = True) -> Path:
    """Five stages: validate, train, evaluate and deploy succeeded; register failed (or
    succeeded). Returns the overview's path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    validation = samples.validation_report()
    _publish(run_dir, StageSummary("validate_data", "Data validation", "succeeded", STARTED,
                                   "2026-11-30T05:24:33+00:00", "validate_data.html",
                                   data_facts(validation)), validation.to_html())
    metrics, curve, val, facts = samples.training_outcome()
    _publish(run_dir, StageSummary("train", "Training", "succeeded", "2026-11-30T05:24:33+00:00",
                                   "2026-11-30T05:25:41+00:00", "train.html",
                                   samples.training_facts()),
             training_report_html(metrics, curve, val, facts))
    report = samples.eval_report(champion=False)
    _publish(run_dir, StageSummary("evaluate", "Evaluation: PASS", "succeeded",
                                   "2026-11-30T05:25:41+00:00", "2026-11-30T05:26:20+00:00",
                                   "evaluate.html", eval_facts(report)), eval_html(report))
    if failed_register:
        error = ("SELF_CHECK_FAILED: models:/shipyard-tiny/3 failed verification at "
                 "registration and was deleted: <signature> does not verify")
        _publish(run_dir, StageSummary("register", "Model registration", "failed",
                                       "2026-11-30T05:26:20+00:00",
                                       "2026-11-30T05:26:24+00:00", "register.html",
                                       error=error),
                 f"<h2 class='verdict-fail'>Failed</h2><pre>{error.replace('<', '&lt;')}</pre>")
    record = samples.deploy_record()
    _publish(run_dir, StageSummary("deploy_canary", "Canary deployment", "succeeded",
                                   "2026-11-30T05:26:24+00:00", "2026-11-30T05:27:02+00:00",
                                   "deploy_canary.html", deploy_facts(record)),
             deploy_html(record))
    return write_overview(run_dir, RUN_ID)


@pytest.fixture
def sample_run(tmp_path: Path) -> Path:
    """The overview (index.html) of a synthetic run whose register stage failed."""
    return write_sample_run(tmp_path / "reports" / RUN_ID)
