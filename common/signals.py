"""SIGTERM as an exception, so a stopped stage runs its cleanup.

Flyte (and Kubernetes, and `kill`) stop a task with SIGTERM, whose default action ends the
process at once: no `finally`, no `with` block exit, no rollback. Inside
`signals_raise_stage_interrupted()` a SIGTERM raises `StageInterrupted` in the main thread
instead (SIGINT already raises KeyboardInterrupt), so deploy rolls its canary back and
evaluate stops the engines it started before the process ends. SIGKILL cannot be caught:
for that, children die with their owner (serving.process) and the next deploy rolls back a
canary a killed run left behind.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class StageInterrupted(BaseException):
    """The stage received SIGTERM. A BaseException, like KeyboardInterrupt: `except
    Exception` handlers do not swallow it, cleanup (`finally`, `except BaseException`) runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _raise(signum: int, frame: FrameType | None) -> None:
    raise StageInterrupted(signum)


@contextmanager
def signals_raise_stage_interrupted() -> Iterator[None]:
    """Within the block, SIGTERM raises StageInterrupted (main thread only; elsewhere a no-op,
    since Python delivers signals to the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
