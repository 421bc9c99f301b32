"""The one error type of the `eval` package.

Every error names the input or the rule that failed and what to do about it, and carries a
stable machine-readable `code` (``EVAL_SCORING_CHECK_FAILED``, ``EVAL_JUDGE_HTTP``, ...) so the
Flyte task and CI can branch on it without parsing text.
"""

from __future__ import annotations

from common.errors import StageError


class EvalError(StageError):
    """The eval stage refused its input or could not finish (a `StageError`: the same code,
    message and details). Credentials inside URIs (a judge URL) are redacted from `message`."""
