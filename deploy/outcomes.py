"""The deploy stage's vocabulary, shared with the Flyte contract (`tasks.contracts`).

Kept apart from the stage code so that importing the contracts does not load the deploy
stack (and does not enter the cache key of tasks that never deploy)."""

from __future__ import annotations

from typing import Literal

# The canary analysis verdict.
Outcome = Literal["PASS", "FAIL", "INCONCLUSIVE"]
# What the deploy did with the model it was given.
DeployAction = Literal["first_deployment", "promoted", "rolled_back", "already_serving"]
