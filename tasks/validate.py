"""Flyte task `validate_data`: DataConfig -> ValidatedDataset (a thin shell over
`data.stage.validate_dataset`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from flytekit import Cache, Resources, task
from flytekit.types.directory import FlyteDirectory

from common.cost import CostConfig
from common.errors import StageError
from data.config import DataConfig
from tasks import timeouts
from tasks.base_model import with_base_model_dir
from tasks.caching import COMMON, code_version
from tasks.contracts import BaseModel, ValidatedDataset
from tasks.flyte_adapter import STAGE_DECK_FIELDS, working_directory
from tasks.shell import ErrorReport, stage_shell

_STAGE = "validate_data"
_REPORT_TITLE = "Data validation"
# A new version of one of these can change the published bytes (tokenizer files, report).
_OUTPUT_SHAPING_PACKAGES = ("tokenizers", "transformers", "great-expectations", "pandas")


def _check_sources_unchanged(expected: dict[str, str], read: dict[str, dict[str, str]]) -> None:
    for split, digest in expected.items():
        found = read.get(split, {}).get("sha256")
        if found != digest:
            raise StageError(
                "DATA_SOURCE_CHANGED",
                f"{split} split {read.get(split, {}).get('location', '?')}: sha256 {found} was "
                f"read, but {digest} when the run started. The file changed during the run; "
                "run the pipeline again.",
            )


@task(
    timeout=timeouts.VALIDATE,
    cache=Cache(version=code_version(*COMMON, "tasks/validate.py", "tasks/base_model.py", "data",
                                 packages=_OUTPUT_SHAPING_PACKAGES),
                ignored_inputs=("prices",)),
    retries=1,
    enable_deck=True,
    deck_fields=STAGE_DECK_FIELDS,
    requests=Resources(cpu="1", mem="2Gi"),
    limits=Resources(cpu="2", mem="4Gi"),
)
def validate_data(config: DataConfig, source_digests: dict[str, str],
                  prices: CostConfig, base: BaseModel | None = None) -> ValidatedDataset:
    """`source_digests` (from resolve_config) makes file contents part of the cache key; the
    stage re-hashes what it reads and refuses files that changed since. `base` (from
    provision_base): its tokenizer and chat template are the dataset's."""
    # pandas, Great Expectations and tokenizers load when the task runs, not at import
    from data.report import overview_facts
    from data.stage import REPORT_JSON_NAME, validate_dataset

    with stage_shell(_STAGE, _REPORT_TITLE, prices, error_report=_data_docs) as run:
        output_dir = Path(tempfile.mkdtemp(prefix="validated-", dir=working_directory())
                          ) / "dataset"
        outcome = validate_dataset(with_base_model_dir(config, base, "validate_data"),
                                   output_dir)
        run.publish(outcome.report_html, json_path=outcome.output_dir / REPORT_JSON_NAME,
                    facts=overview_facts(outcome.report))
        _check_sources_unchanged(source_digests, outcome.report.inputs)
        return ValidatedDataset(
            files=FlyteDirectory(path=str(outcome.output_dir)),
            split_digests=outcome.split_digests,
            split_rows=outcome.split_rows,
            tokenizer_digest=outcome.tokenizer_digest,
            report_digest=outcome.report_digest,
            token_file_digests=outcome.token_file_digests,
        )


def _data_docs(error: StageError) -> ErrorReport | None:
    """A failed validation publishes its data-docs report (which rows broke which rule)."""
    from data.report import overview_facts

    report = error.details.get("report")
    if report is None:
        return None
    json_path = error.details.get("report_json")
    return ErrorReport(report.to_html(), Path(json_path) if json_path else None,
                       overview_facts(report))
