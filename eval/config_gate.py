"""`GateConfig`: the preset's ``eval.gate:`` section, the rules of the statistical promotion
gate (eval/gate.py), re-exported by eval/config.py.

Its keys sat directly in ``eval:`` in earlier releases (``eval.hard_ceilings``); those flat
keys still load for one release, mapped onto ``eval.gate.<key>`` with a deprecation line
(eval/config.py `RENAMED_KEYS`). Which tasks it may name (those of ``eval.tasks``) is checked
by `EvalConfig`, which knows the tasks run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from eval.errors import EvalError
from eval.suite.specs import TASK_SPECS

# The tasks of the suite, the names a gate setting may use (tests/eval/test_config_gate.py
# checks this is every task of TASK_SPECS); the config loader refuses any other name.
SuiteTask = Literal["shipyard_scoring_check", "shipyard_mc", "shipyard_ppl", "shipyard_exact",
                    "ifeval", "shipyard_skill"]

# The gate's task-naming fields, checked against eval.tasks by EvalConfig.
TASK_FIELDS = ("non_inferiority_margins", "hard_floors", "hard_ceilings", "must_improve")


def _default_margins() -> dict[SuiteTask, float]:
    # In each task's primary metric's units: accuracy points, and bits per byte.
    return {"shipyard_mc": 0.05, "shipyard_exact": 0.05, "shipyard_ppl": 0.05}


@dataclass
class GateConfig:
    """The preset's ``eval.gate:`` section: the bounds, margins and statistics the promotion
    gate applies (eval/gate.py)."""

    # Tasks compared with the champion, each with the largest loss it tolerates in its
    # primary metric's units (accuracy for mc/exact, bits per byte for ppl).
    non_inferiority_margins: dict[SuiteTask, float] = field(default_factory=_default_margins)
    # Tasks the candidate must beat the champion on: the one-sided `confidence` lower bound
    # of the paired improvement of the primary metric must be above 0 (with a champion; the
    # first model has nothing to beat). Tasks here may also have a non-inferiority margin.
    must_improve: list[SuiteTask] = field(default_factory=list)
    # One-sided confidence of the non-inferiority bounds; power of the reported minimum
    # detectable effect. `confidence` and the bootstrap settings are the evaluation's one
    # statistics setting: the judge's intervals (eval/judge/run.py: win rate, rubric scores,
    # calibration) use them too, two-sided at 2*confidence-1, so that their lower end is the
    # one-sided bound the gate's judge check applies.
    confidence: float = 0.95
    power: float = 0.8
    bootstrap_resamples: int = 2000
    bootstrap_seed: int = 20240601
    # Fewest paired items a comparison needs; fewer fails the gate (it cannot show
    # non-inferiority on so little evidence).
    min_paired_items: int = 30
    # Absolute bounds on a task's primary metric, checked with or without a champion:
    # floors for higher-is-better metrics, ceilings for lower-is-better ones.
    hard_floors: dict[SuiteTask, float] = field(default_factory=dict)
    hard_ceilings: dict[SuiteTask, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_bounds()
        self._check_numbers()

    def _bad(self, name: str, rule: str) -> EvalError:
        return EvalError("EVAL_CONFIG_INVALID",
                         f"eval.gate.{name}={getattr(self, name)!r}: {rule}")

    def _check_bounds(self) -> None:
        for name in TASK_FIELDS:
            unknown = sorted(set(getattr(self, name)) - set(TASK_SPECS))
            if unknown:  # a config built in code (the loader checks the names itself)
                raise self._bad(name, f"names tasks {unknown} that are not suite tasks "
                                      f"{sorted(TASK_SPECS)}.")
        wrong_way = [t for t in self.hard_floors if not TASK_SPECS[t].higher_is_better]
        wrong_way += [t for t in self.hard_ceilings if TASK_SPECS[t].higher_is_better]
        if wrong_way:
            raise EvalError("EVAL_CONFIG_INVALID",
                            f"eval.gate.hard_floors/hard_ceilings: {sorted(wrong_way)} bound "
                            "the wrong side; floors are for higher-is-better metrics "
                            "(accuracy), ceilings for lower-is-better ones (bits per byte).")
        if any(v < 0 or not math.isfinite(v) for v in self.non_inferiority_margins.values()):
            raise self._bad("non_inferiority_margins", "margins must be finite and >= 0.")

    def _check_numbers(self) -> None:
        for name in ("confidence", "power"):
            if not 0.5 < getattr(self, name) < 1:
                raise self._bad(name, "must be in (0.5, 1), e.g. 0.95 / 0.8.")
        for name in ("bootstrap_resamples", "min_paired_items"):
            if getattr(self, name) <= 0:
                raise self._bad(name, "must be > 0.")


def report_gate_config(config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The gate settings of an eval report's ``config``: nested under ``gate`` since the gate
    got its own section, flat in the config of reports written before."""
    config = config or {}
    gate = config.get("gate")
    return gate if isinstance(gate, Mapping) else config
