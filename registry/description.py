"""The MLflow model version description: what a person reads first in the MLflow UI.

Markdown (the UI renders it): the eval gate's outcome, the model digest, the data it was
trained on, who signed it, and the one command that checks all of it. The tags stay the
machine-readable record; this text only repeats them for people.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from registry.attest import BuildInputs, ImportInputs
from registry.base_model import BaseModelRef

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
    if build.base_model is not None:
        lines.append(f"- fine-tuned from: {_base_line(build.base_model)}")
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


def import_description(build: ImportInputs, version: str, signer_label: str) -> str:
    """An imported base model: where it came from, and that Shipyard neither trained nor gated
    it (a policy must allow its source by name)."""
    name = build.config.registered_model_name
    uri = f"models:/{name}/{version}"
    lines = [
        f"**{name} version {version}**: base model **imported as published**, not trained "
        "or gated by Shipyard (a verify policy must list its source in "
        "`allowed_import_sources`).",
        "",
        f"- base model: {_base_line(build.base)}",
        f"- model digest: `sha256:{build.model_digest}`",
        f"- signed by: `{signer_label}` (signature and SLSA provenance in this version's run, "
        "`attestations/`)",
        f"- imported by: `{build.builder_id}` (execution `{build.execution_id}`)",
        "",
        "**Verify before use** (signature, provenance, policy and digest; fails closed):",
        "",
        f"    shipyard verify {uri} --expected-digest sha256:{build.model_digest}",
    ]
    return "\n".join(lines) + "\n"


def _base_line(base: BaseModelRef) -> str:
    package = f", {base.package}=={base.package_version}" if base.package else ""
    return (f"`{base.name}` from `{base.source}` (licence {base.licence}{package}), "
            f"`sha256:{base.model_digest}`")


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
