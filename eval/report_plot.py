"""The eval report's plot: the primary metric per task and, with a champion, the paired
improvements against it (eval/report.py embeds it in the HTML as a PNG)."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any

from eval.config_gate import report_gate_config
from eval.suite.specs import TASK_SPECS

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_html(report: dict[str, Any]) -> str:
    figure = metrics_figure(report)
    if figure is None:
        return ""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"<h3>Plot</h3><img alt='eval metrics' src='data:image/png;base64,{encoded}'/>"


def metrics_figure(report: dict[str, Any]) -> Figure | None:
    """The primary metric per task and, only when there is a champion, the paired
    improvements against it; None when there is nothing to draw."""
    # matplotlib's object API with the Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(report["metrics"])
    if not tasks:
        return None
    champion = report["champion_metrics"] or {}
    comparisons = report["gate"]["comparisons"]
    # Without a champion there is nothing to compare: one chart, no empty "vs champion" axes.
    figure = Figure(figsize=(10, 3.6) if comparisons else (5.5, 3.6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2) if comparisons else [figure.subplots(1, 1)]
    for i, task in enumerate(tasks):
        metric = TASK_SPECS[task].primary_metric
        value = report["metrics"][task].get(metric)
        err = report["metrics"][task].get(f"{metric}_stderr")
        axes[0].bar(i - 0.2, value or 0, 0.4, yerr=1.96 * err if err else None,
                    color="tab:blue", label="candidate" if i == 0 else None)
        if task in champion:
            axes[0].bar(i + 0.2, champion[task].get(metric) or 0, 0.4, color="tab:gray",
                        label="champion" if i == 0 else None)
    axes[0].set_xticks(range(len(tasks)),
                       [f"{t}\n{TASK_SPECS[t].primary_metric}" for t in tasks], fontsize=7)
    axes[0].set_title("primary metric (±1.96 stderr)", fontsize=9)
    if champion:
        axes[0].legend(fontsize=7)
    if comparisons:
        _plot_comparisons(axes[1], report)
    figure.tight_layout()
    return figure


def _plot_comparisons(ax: Any, report: dict[str, Any]) -> None:
    comparisons = report["gate"]["comparisons"]
    margins = report_gate_config(report["config"]).get("non_inferiority_margins") or {}
    for j, c in enumerate(comparisons):
        low, high = c["interval_low"], c["interval_high"]
        if low is not None and high is not None:
            ax.plot([low, high], [j, j], color="tab:blue")
        ax.plot([c["improvement"]], [j], "o", color="tab:blue")
        ax.plot([-margins.get(c["task"], 0)] * 2, [j - 0.3, j + 0.3], color="tab:red")
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_yticks(range(len(comparisons)), [c["task"] for c in comparisons], fontsize=7)
    ax.set_title("improvement vs champion (red: -margin)", fontsize=9)
