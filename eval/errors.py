"""The one error type of the `eval` package.

Every error names the input or the rule that failed and what to do about it, and carries a
stable machine-readable `code` (``EVAL_SCORING_CHECK_FAILED``, ``EVAL_JUDGE_HTTP``, ...) so the
Flyte task and CI can branch on it without parsing text.
"""

from __future__ import annotations

from typing import Any

from common.redact import redact_text


class EvalError(Exception):
    """The eval stage refused its input or could not finish. Credentials inside URIs (a judge
    URL) are redacted from `message`."""

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        message = redact_text(message)
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.details = details or {}
