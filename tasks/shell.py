"""The one shell every stage task body runs in: cost, timing, quiet console, report publishing
and error reporting, so a task body is its stage call and its contract.

    with stage_shell("evaluate", "Evaluation", prices) as run:
        summary = evaluate_model(...)                  # a StageError is published, re-raised
        run.publish(summary.report_html, json_path=..., facts=...)
        return to_contract(summary)

Every project error is a `common.errors.StageError` (EvalError and RegistryError subclass
it): the shell publishes the failed stage's report (the error page, or what `error_report`
makes of the error, e.g. validate_data's data-docs report) and re-raises it unchanged, so
Flyte, the CLI and CI see the stage's own code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from common.cost import CostConfig, StageCost, stage_cost
from common.errors import StageError
from tasks.flyte_adapter import error_html, publish_report, quiet_console, run_reports_dir
from tasks.overview import StageFacts, Status


@dataclass(frozen=True)
class ErrorReport:
    """What a failed stage publishes instead of the plain error page."""

    body_html: str
    json_path: Path | None = None
    facts: StageFacts | None = None


@dataclass
class StageRun:
    stage: str
    title: str
    cost: StageCost
    started: float
    # False on train ranks other than 0: only rank 0 publishes and records
    publishes: bool = True
    error_report: Callable[[StageError], ErrorReport | None] | None = None
    published: list[Path] = field(default_factory=list)

    def publish(self, body_html: str, *, json_path: Path | None = None,
                facts: StageFacts | None = None, status: Status = "succeeded",
                title: str | None = None) -> None:
        """The stage's report: its Flyte Deck, the HTML file and the run overview row."""
        if self.publishes:
            self.published.append(publish_report(
                self.stage, title or self.title, body_html, json_path, status=status,
                started=self.started, facts=facts))

    def _publish_error(self, error: StageError) -> None:
        # A stage that published its report and then refuses (a gate FAIL) keeps that report.
        if not self.publishes or self.published:
            return
        custom = self.error_report(error) if self.error_report is not None else None
        report = custom or ErrorReport(error_html(error))
        self.published.append(publish_report(
            self.stage, self.title, report.body_html, report.json_path, started=self.started,
            facts=report.facts, error=error))


@contextmanager
def stage_shell(stage: str, title: str, prices: CostConfig, *, publishes: bool = True,
                error_report: Callable[[StageError], ErrorReport | None] | None = None
                ) -> Iterator[StageRun]:
    """Run a stage task body: its cost recorded at `prices` (common/cost.py), the console
    quiet, a StageError published as the stage's failed report and re-raised. `publishes`
    False (train ranks other than 0) measures only."""
    with stage_cost(stage, run_reports_dir(), prices, record=publishes) as cost:
        run = StageRun(stage, title, cost, time.time(), publishes, error_report)
        quiet_console()
        try:
            yield run
        except StageError as error:
            run._publish_error(error)
            raise
