"""Progress of a long loop, the way a Unix tool shows it: a live bar on a terminal; anywhere
else (a log file, a pipe, a Flyte task log) one plain line every N steps and at the end,
instead of hundreds of carriage-return redraws that a file keeps as one unreadable line."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

LINES_PER_RUN = 10  # a log file gets about this many lines per loop, whatever its length


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class StepProgress:
    """`update(done, key=value, ...)` after each step; `close()` at the end.

    `every_steps` (default: total / LINES_PER_RUN) is how often a line is written when
    `stream` is not a terminal; `enabled=False` (other ranks than 0) writes nothing."""

    def __init__(self, desc: str, total: int, *, initial: int = 0, enabled: bool = True,
                 stream: TextIO | None = None, every_steps: int | None = None) -> None:
        self.desc, self.total = desc, total
        self._stream = sys.stderr if stream is None else stream
        self._enabled = enabled
        self._every = every_steps or max(1, round(total / LINES_PER_RUN))
        self._began, self._initial, self._last = time.monotonic(), initial, initial
        self._bar: tqdm[Any] | None = None
        if enabled and is_terminal(self._stream):
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step",
                             file=self._stream, dynamic_ncols=True)

    def update(self, done: int, **values: str) -> None:
        if self._bar is not None:
            self._bar.update(done - self._last)
            self._bar.set_postfix(values)
        elif self._enabled and (done % self._every == 0 or done == self.total):
            self._write_line(done, values)
        self._last = done

    def _write_line(self, done: int, values: dict[str, str]) -> None:
        seconds = time.monotonic() - self._began
        rate = (done - self._initial) / seconds if seconds > 0 else 0.0
        fields = "".join(f" {key} {value}" for key, value in values.items())
        print(f"[shipyard] {self.desc} step {done}/{self.total}{fields} "
              f"({rate:.2f} steps/s)", file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
