"""The one error type of the `tasks` package.

Every error says what input was wrong, which rule it broke and how to fix it, and carries a
stable machine-readable `code` so CI and callers can branch on it without parsing text.
"""

from __future__ import annotations

from common.redact import redact_text


class StageError(Exception):
    """A stage refused its input or could not finish.

    `code` is stable (e.g. ``DATA_VALIDATION_FAILED``); `message` is for humans, with any
    credential inside a URI redacted (it reaches logs, reports and the Flyte UI).
    """

    def __init__(self, code: str, message: str, *, details: dict | None = None) -> None:
        message = redact_text(message)
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.details = details or {}
