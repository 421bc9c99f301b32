"""Upper bounds on each task's run time (Flyte `timeout`): nothing waits forever.

Flyte fails a task that runs longer (and retries it where retries are declared); on a local
run flytekit ignores the bound, where each stage's own deadlines apply (engine start-up,
HTTP calls, bakes, collective operations). The bounds are generous for the largest preset
a workflow runs: a stage that needs more is a stuck stage or a preset that needs its own
override (`task.with_overrides(timeout=...)`)."""

from __future__ import annotations

from datetime import timedelta

RESOLVE = timedelta(minutes=10)
# converting a GGUF to safetensors: seconds for 135 M parameters, minutes for billions
PROVISION = timedelta(hours=1)
VALIDATE = timedelta(hours=2)
TRAIN = timedelta(hours=48)
EVALUATE = timedelta(hours=8)
REGISTER = timedelta(hours=2)
DEPLOY = timedelta(hours=6)
