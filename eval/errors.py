"""The one error type of the `eval` package.

Every error names the input or the rule that failed and what to do about it, and carries a
stable machine-readable `code` (``EVAL_SCORING_CHECK_FAILED``, ``EVAL_JUDGE_HTTP``, ...) so the
Flyte task and CI can branch on it without parsing text.
"""

from __future__ import annotations

from typing import Any


class EvalError(Exception):
    """The eval stage refused its input or could not finish."""

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.details = details or {}
