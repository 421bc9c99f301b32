"""A fake clock for code that takes `clock` and `sleep` callables (the canary controller,
`shipyard status --watch`): sleeping advances time at once, so tests run in no time."""

from __future__ import annotations


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
