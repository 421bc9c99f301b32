"""Publishing the data stage's output (data/stage.py): a hidden staging sibling renamed into
place, so a crash or a rejection never leaves something that looks like a valid dataset; the
reports; and a rejection's reports kept apart in ``<output_dir>.rejected/``."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from common.errors import StageError
from common.html import page
from data.report import ValidationReport, failure_message

TOKENIZER_DIRNAME = "tokenizer"
REPORT_JSON_NAME = "validation_report.json"
REPORT_HTML_NAME = "validation_report.html"
REJECTED_SUFFIX = ".rejected"


def reject(
    report: ValidationReport, output_dir: Path, locations: dict[str, str]
) -> StageError:
    """Keep the reports where a user can read them, clearly apart from any valid output."""
    rejected_dir = output_dir.with_name(output_dir.name + REJECTED_SUFFIX)
    staging = new_staging_dir(output_dir)
    try:
        json_path, html_path = write_reports(staging, report)
        replace_dir(staging, rejected_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report_json = rejected_dir / json_path.name
    report_html = rejected_dir / html_path.name
    message = (
        failure_message(report, locations)
        + f"\nFull report: {report_html} (JSON: {report_json})."
    )
    return StageError(
        "DATA_VALIDATION_FAILED",
        message,
        details={"report_json": str(report_json), "report_html": str(report_html),
                 "report": report},
    )


def write_reports(directory: Path, report: ValidationReport) -> tuple[Path, Path]:
    json_path = directory / REPORT_JSON_NAME
    html_path = directory / REPORT_HTML_NAME
    json_path.write_text(report.to_json(), encoding="utf-8")
    html_path.write_text(
        page("Data validation", report.to_html()),
        encoding="utf-8",
    )
    return json_path, html_path


def new_staging_dir(output_dir: Path) -> Path:
    # A sibling, so the final rename stays on one filesystem and is atomic.
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.staging-", dir=output_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the published dataset is meant to be read
    return staging


def replace_dir(source: Path, target: Path) -> None:
    """Move `source` to `target`, replacing an existing `target` (a previous run's output)."""
    if not target.exists():
        source.rename(target)
        return
    retired = target.with_name(f".{target.name}.retired-{os.getpid()}")
    shutil.rmtree(retired, ignore_errors=True)
    target.rename(retired)
    source.rename(target)
    shutil.rmtree(retired, ignore_errors=True)
