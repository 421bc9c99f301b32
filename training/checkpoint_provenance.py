"""What the weights of a checkpoint were trained from, and the refusal to resume from another's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.errors import StageError
from training.checkpoint_manifest import Location


@dataclass(frozen=True)
class Provenance:
    """What the weights of a run are trained from; a resume must match it exactly."""

    config_digest: str  # TrainConfig.digest()
    config: dict[str, Any]  # the config itself, to name the fields that differ
    dataset_digests: dict[str, str] = field(default_factory=dict)  # file/dir name -> sha256

    def as_train_state(self) -> dict[str, Any]:
        return {"config_digest": self.config_digest, "config": self.config,
                "dataset_digests": self.dataset_digests}


def check_provenance(path: Location, train_state: dict[str, Any], expected: Provenance) -> None:
    """Refuse to resume from `path` unless it was written under `expected`'s config and data."""
    _check_config(path, train_state, expected)
    _check_dataset(path, train_state, expected)


def _check_config(path: Location, train_state: dict[str, Any], expected: Provenance) -> None:
    recorded = train_state.get("config_digest")
    if recorded == expected.config_digest:
        return
    old = train_state.get("config") or {}
    changed = sorted(k for k in set(old) | set(expected.config)
                     if old.get(k) != expected.config.get(k)) if old else []
    raise StageError(
        "TRAIN_CHECKPOINT_CONFIG_MISMATCH",
        f"checkpoint {path} was written under train config digest {recorded}, but this run's "
        f"config digest is {expected.config_digest}"
        + (f" (fields that differ: {changed})" if changed else "")
        + ". Resuming would finish a model the recorded config does not describe. Use a "
        "fresh train.checkpoint_dir, or restore the config the checkpoint was written with.",
        details={"checkpoint": str(path), "checkpoint_config_digest": recorded,
                 "config_digest": expected.config_digest},
    )


def _check_dataset(path: Location, train_state: dict[str, Any], expected: Provenance) -> None:
    # A checkpoint that recorded no dataset digests cannot be verified: refused, not trusted.
    found: dict[str, str] = train_state.get("dataset_digests") or {}
    differing = sorted(k for k in set(found) | set(expected.dataset_digests)
                       if found.get(k) != expected.dataset_digests.get(k))
    if not differing:
        return
    pairs = "; ".join(f"{k}: checkpoint {found.get(k, 'not recorded')}, this run "
                      f"{expected.dataset_digests.get(k, 'absent')}" for k in differing)
    raise StageError(
        "TRAIN_CHECKPOINT_DATASET_MISMATCH",
        f"checkpoint {path} was trained on other data than this run's dataset ({pairs}). "
        "Resuming would finish a model on two datasets. Use a fresh train.checkpoint_dir, "
        "or restore the dataset the checkpoint was written with.",
        details={"checkpoint": str(path), "checkpoint_dataset_digests": found,
                 "dataset_digests": expected.dataset_digests},
    )
