"""The one error base class of the project.

Every error says what input was wrong, which rule it broke and how to fix it, and carries a
stable machine-readable `code` so CI and callers can branch on it without parsing text. The
stage libraries raise it or their own subclass (`eval.errors.EvalError`,
`registry.errors.RegistryError`, which adds the failed check); the codes are one registry:
each has its section in docs/troubleshooting.md and a test that asserts it
(tests/test_docs.py, tests/test_error_code_coverage.py). A task body needs one `except
StageError`, never a translation from one error type to another.
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
