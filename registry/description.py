"""The MLflow model version description: what a person reads first in the MLflow UI.

Markdown (the UI renders it): the eval gate's outcome, the model digest, the data it was
trained on, who signed it, and the one command that checks all of it. The tags stay the
machine-readable record; this text only repeats them for people.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from registry.attest import BuildInputs

_MAX_SUMMARY_ITEMS = 8


def version_description(build: BuildInputs, version: str, signer_label: str) -> str:
    name = build.config.registered_model_name
    uri = f"models:/{name}/{version}"
    lines = [
        f"**{name} version {version}**: {_gate_line(build.eval_report)}",
        "",
        f"- model digest: `sha256:{build.model_digest}`",
        f"- signed by: `{signer_label}` (signature and SLSA provenance in this version's run, "
        "`attestations/`)",
        f"- source: {build.source.repository} @ `{build.source.commit}`"
        + (" (uncommitted changes)" if build.source.dirty else ""),
        f"- built by: `{build.builder_id}` (execution `{build.execution_id}`)",
    ]
    if build.training_run_id:
        lines.append(f"- training run: `{build.training_run_id}`")
    lines += ["", "**Data** (sha256 of each split):", ""]
    for split, digest in sorted(build.dataset_digests.items()):
        where = build.dataset_uris.get(split)
        lines.append(f"- {split}: `{digest}`" + (f" ({where})" if where else ""))
    headline = _eval_headline(build.eval_report)
    if headline:
        lines += ["", "**Eval summary:** " + ", ".join(headline)]
    lines += [
        "",
        "**Verify before use** (signature, provenance, policy and digest; fails closed):",
        "",
        f"    shipyard verify {uri} --expected-digest sha256:{build.model_digest}",
    ]
    return "\n".join(lines) + "\n"


def _gate_line(eval_report: Mapping[str, Any] | None) -> str:
    if eval_report is None:
        return "not evaluated (no eval gate result)."
    outcome = eval_report.get("gate_outcome")
    if outcome is None:
        return "evaluated, without a gate outcome."
    return f"eval gate **{outcome}**."


def _eval_headline(eval_report: Mapping[str, Any] | None) -> list[str]:
    if eval_report is None:
        return []
    summary = eval_report.get("summary")
    if not isinstance(summary, Mapping):
        return []
    items = [f"{k} = {_short(v)}" for k, v in summary.items() if k not in ("gate",)]
    return items[:_MAX_SUMMARY_ITEMS]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)
