"""The training report: final metrics and the loss curve, as HTML for a Flyte Deck, and the
key numbers of the run overview."""

from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")  # headless: workers have no display
import matplotlib.pyplot as plt

from common.html import (
    LineChart,
    Series,
    StageFacts,
    format_bytes,
    format_count,
    format_duration,
    format_number,
    format_percent,
    key_value_table,
)


def loss_curve_png(loss_curve: list[float], val_losses: dict[int, float]) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    ax.plot(range(1, len(loss_curve) + 1), loss_curve, label="train loss")
    if val_losses:
        steps = sorted(val_losses)
        ax.plot(steps, [val_losses[s] for s in steps], "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def loss_chart(loss_curve: list[float], val_losses: dict[int, float]) -> LineChart:
    """The loss curve as a small inline-SVG chart (the overview's copy of the PNG above)."""
    series = [Series("train", [(float(i), loss) for i, loss in enumerate(loss_curve, start=1)])]
    if val_losses:
        series.append(Series("validation", [(float(s), val_losses[s]) for s in sorted(val_losses)]))
    return LineChart("loss curve", "step", "nats/token", series)


def metric_rows(metrics: dict[str, float]) -> list[tuple[str, str]]:
    """The final metrics, labelled and formatted for people (unknown keys as plain numbers)."""
    rows: list[tuple[str, str]] = []
    for key, value in sorted(metrics.items()):
        if isinstance(value, float) and math.isnan(value):
            continue
        rows.append((key.removeprefix("final_").replace("_", " "), _format_metric(key, value)))
    return rows


def _format_metric(key: str, value: float) -> str:
    if key == "num_parameters":
        return format_count(value, "parameters")
    if key.endswith("_bytes"):
        return format_bytes(value)
    if key.endswith("_seconds"):
        return format_duration(value)
    if key == "mfu":
        return format_percent(value)
    if key == "tokens_per_second":
        return f"{format_number(value)} tokens/s"
    if key == "world_size":
        return format_count(value, "processes")
    return format_number(value)


def overview_facts(metrics: dict[str, float], loss_curve: list[float],
                   val_losses: dict[int, float], facts: dict[str, str]) -> StageFacts:
    parts = [f"{format_count(len(loss_curve))} steps"]
    if loss_curve:
        parts.append(f"final loss {format_number(loss_curve[-1])}")
    if "num_parameters" in metrics:
        parts.append(format_count(metrics["num_parameters"], "parameters"))
    return StageFacts(headline=", ".join(parts),
                      facts=[*facts.items(), *metric_rows(metrics)],
                      chart=loss_chart(loss_curve, val_losses))


def training_report_html(
    metrics: dict[str, float], loss_curve: list[float], val_losses: dict[int, float],
    facts: dict[str, str],
) -> str:
    png = base64.b64encode(loss_curve_png(loss_curve, val_losses)).decode()
    return (f"<img alt='loss curve' src='data:image/png;base64,{png}'/>"
            + key_value_table([*facts.items(), *metric_rows(metrics)]))
