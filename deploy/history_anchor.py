"""The deployment history's head, anchored outside the file (deploy/history.py): a tag on the
registered model in MLflow records the last sequence number and entry digest, so a history cut
short, replaced by an older copy, or whose anchor is gone is refused."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import StageError
from deploy.history_lines import HistoryEntry, HistoryHead, head_of

logger = logging.getLogger(__name__)

ANCHOR_TAG_PREFIX = "shipyard.history_head."


@dataclass(frozen=True)
class Anchor:
    """What the anchor store said: `head` None means it holds no head for this deployment
    (the anchor was looked up; pass no Anchor at all to skip the check)."""

    head: HistoryHead | None


def anchor_tag(deployment: str) -> str:
    """The registered-model tag that holds a deployment's history head."""
    return ANCHOR_TAG_PREFIX + deployment


def read_anchor(client: Any, registered_model: str, deployment: str) -> Anchor:
    """The head MLflow records for the deployment (Anchor(None) when none is recorded, or the
    registered model does not exist yet). A tag that is not a head reads as none: the
    history then has to match nothing, which fails closed once the history is anchored."""
    from mlflow.exceptions import MlflowException

    try:
        tags = dict(client.get_registered_model(registered_model).tags)
    except MlflowException:
        return Anchor(None)
    value = tags.get(anchor_tag(deployment))
    return Anchor(HistoryHead.from_tag(str(value)) if value is not None else None)


def write_anchor(client: Any, registered_model: str, deployment: str,
                 entry: HistoryEntry) -> bool:
    """Record `entry` (just appended) as the deployment's head; False when MLflow could not
    be reached. The entry is on disk and signed by then, and a history ahead of its anchor
    still reads (the anchored entry must match): an outage here costs only the protection
    of the newest line until the next deploy writes the head again."""
    from mlflow.exceptions import MlflowException

    assert entry.sequence is not None  # appended by this version: always numbered
    try:
        client.set_registered_model_tag(registered_model, anchor_tag(deployment),
                                        HistoryHead(entry.sequence, entry.sha256).tag_value())
    except MlflowException as exc:
        logger.error("could not anchor the history head of %s in MLflow: %s", deployment, exc)
        return False
    return True


def check_anchor(path: Path, entries: list[HistoryEntry], anchor: Anchor | None) -> None:
    if anchor is None:
        return
    head = anchor.head
    if head is None:
        if any(e.sequence is not None for e in entries):
            raise StageError(
                "DEPLOY_HISTORY_UNANCHORED",
                f"deployment history {path} has {len(entries)} entries but the registry holds "
                f"no head for it (tag {anchor_tag(entries[-1].deployment or '')!r}): the tag "
                "was removed, or its write failed after the last deploy. Nothing was "
                "deployed. Compare the history with the decision records in records/ and "
                "MLflow; when it is complete, set the tag to "
                f"'{len(entries)}:{entries[-1].sha256}' (sequence:entry_sha256), then deploy "
                "again.",
                details={"path": str(path), "entries": len(entries)})
        return
    if head.sequence > len(entries) or entries[head.sequence - 1].sha256 != head.entry_sha256:
        found = head_of(entries)
        raise StageError(
            "DEPLOY_HISTORY_TRUNCATED",
            f"deployment history {path} does not reach its anchored head (entry "
            f"{head.sequence}, sha256 {head.entry_sha256[:16]}...; the file has "
            f"{len(entries)} entries): it was cut short or replaced by another copy. Nothing "
            "was deployed. Restore the complete history from a backup (the decision records "
            "in records/ and MLflow say what it held), then deploy again.",
            details={"path": str(path), "anchored_sequence": head.sequence,
                     "entries": len(entries),
                     "head": None if found is None else found.tag_value()})

