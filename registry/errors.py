"""The one error type of the `registry` package.

A registration or verification that cannot go on raises `RegistryError`. Its `code` is
stable for callers and CI to branch on; a failed verification also names the `check` that
failed and what was expected versus found, so a user can tell a tampered weight file from a
builder the policy does not allow without reading a stack trace.
"""

from __future__ import annotations

from common.errors import StageError
from common.redact import redact_text


class RegistryError(StageError):
    """Registration refused its input, or a verification check failed (fail-closed). A
    `StageError` whose details (and text) also name the check and what it expected and found."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        check: str | None = None,
        expected: str | None = None,
        found: str | None = None,
    ) -> None:
        # credentials inside URIs (a tracking URI) never reach a message
        self.check = check
        self.expected = None if expected is None else redact_text(expected)
        self.found = None if found is None else redact_text(found)
        super().__init__(code, message, details={"check": check, "expected": self.expected,
                                                 "found": self.found})
        self.args = (self._render(),)

    def __str__(self) -> str:
        return self._render()

    def _render(self) -> str:
        text = f"[{self.code}]"
        if self.check:
            text += f" check {self.check!r} failed:"
        text += f" {self.message}"
        if self.expected is not None or self.found is not None:
            text += f" (expected {self.expected!r}, found {self.found!r})"
        return text
