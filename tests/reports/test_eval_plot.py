"""The eval report draws no empty "vs champion" chart and no empty champion column."""

from __future__ import annotations

import pytest

from eval.report import metrics_figure, render_html
from tests.reports import samples

pytestmark = pytest.mark.unit


def test_without_a_champion_only_the_metric_chart_is_drawn() -> None:
    report = samples.eval_report(champion=False)
    figure = metrics_figure(report)
    assert figure is not None
    assert [ax.get_title() for ax in figure.axes] == ["primary metric (±1.96 stderr)"]
    html = render_html(report)
    assert "Paired comparison with the champion" not in html
    assert "<th>champion</th>" not in html  # no column of dashes


def test_with_a_champion_the_comparison_chart_is_drawn() -> None:
    report = samples.eval_report(champion=True)
    figure = metrics_figure(report)
    assert figure is not None
    assert "improvement vs champion (red: -margin)" in [ax.get_title() for ax in figure.axes]
    assert "<th>champion</th>" in render_html(report)


def test_no_tasks_no_plot() -> None:
    report = samples.eval_report(champion=False)
    report["metrics"] = {}
    assert metrics_figure(report) is None
    assert "<img" not in render_html(report)
