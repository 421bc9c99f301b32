"""What every verification check shares (registry/verify.py): its outcome, the caller's
request, and the mismatch error a check raises."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from registry import eval_attestation as eval_att
from registry.errors import RegistryError
from registry.policy import Policy


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    status: Literal["passed", "skipped"]
    detail: str


@dataclass(frozen=True)
class VerifyRequest:
    model_uri: str
    # the registered model name in the URI: the provenance must be about this name
    name: str
    policy: Policy
    public_key: Path | None
    expected_digest: str | None
    evaluated_against: eval_att.CurrentChampion | None = None


def require(check: str, ok: bool, expected: Any, found: Any, what: str) -> None:
    if not ok:
        raise RegistryError(
            "VERIFICATION_FAILED",
            f"{what} does not match",
            check=check,
            expected=str(expected),
            found=str(found),
        )
