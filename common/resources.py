"""Resource use of one stage, measured at its task edge.

`measure()` is a context manager around a task body; on exit its `ResourceUse` holds:

- ``cpu_seconds``: user + system CPU time of this process and of the child processes it
  waited for (``resource.getrusage`` SELF + CHILDREN deltas). torchrun workers and lm-eval
  subprocesses are counted; a detached server left running (local serving) is not.
- ``gpu_seconds``: wall seconds x visible CUDA devices, where the stage has imported torch and
  CUDA is available; 0 otherwise. This is GPU *allocation* time (what a cluster bills), not
  utilisation: an idle GPU held by the stage counts fully.
- ``peak_memory_bytes``: the highest resident set of this process or a waited-for child
  (``ru_maxrss``). It is the process' peak so far, so when several stages share one process
  (a local ``pyflyte run``) a later stage reports at least the earlier stages' peak; in a
  Flyte pod (one task per process) it is the stage's own.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ResourceUse:
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    gpu_seconds: float = 0.0
    gpu_count: int = 0
    peak_memory_bytes: int = 0
    # how gpu_seconds was obtained, for the report ("none", "allocation")
    gpu_basis: str = "none"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    scale = 1 if sys.platform == "darwin" else 1024
    return scale * max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                       resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def visible_gpus() -> int:
    """CUDA devices visible to this process, without importing torch: a stage that never
    imported torch did not use a GPU."""
    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    try:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:
        return 0


@contextmanager
def measure() -> Iterator[ResourceUse]:
    """Measure the body's resource use; the yielded object is filled in on exit (also when
    the body raises)."""
    use = ResourceUse()
    started, cpu_before = time.perf_counter(), _cpu_seconds()
    try:
        yield use
    finally:
        use.wall_seconds = time.perf_counter() - started
        use.cpu_seconds = max(_cpu_seconds() - cpu_before, 0.0)
        use.peak_memory_bytes = _peak_rss_bytes()
        use.gpu_count = visible_gpus()
        if use.gpu_count:
            use.gpu_seconds = use.wall_seconds * use.gpu_count
            use.gpu_basis = "allocation"
