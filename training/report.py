"""The training report: final metrics and the loss curve, as HTML for a Flyte Deck."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")  # headless: workers have no display
import matplotlib.pyplot as plt


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


def training_report_html(
    metrics: dict[str, float], loss_curve: list[float], val_losses: dict[int, float],
    facts: dict[str, str],
) -> str:
    png = base64.b64encode(loss_curve_png(loss_curve, val_losses)).decode()
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in [*facts.items(), *((k, f"{v:.6g}") for k, v in sorted(metrics.items()))]
    )
    return (f"<img alt='loss curve' src='data:image/png;base64,{png}'/>"
            f"<table>{rows}</table>")
