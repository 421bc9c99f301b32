"""Judge calibration on human labels (LLMBar), per subset and pooled, with bootstrap intervals.

Every pair is judged in both answer orders with the pairwise prompt the judge uses on
candidates: order 1 shows output 1 as A, order 2 shows output 2 as A. Per pair:

  accuracy (average)   mean over the two orders of "the verdict names the human-preferred
                       output" (a TIE or an invalid output is wrong), as LLMBar reports it
  accuracy both orders right in both orders
  order agreement      both orders name the same output (or both say TIE); an invalid output
                       never agrees. Far below 1: the judge answers the position, not the
                       answers
  kappa                Cohen's kappa between the human label (1 / 2) and the judge's pair
                       label: the output both orders chose, TIE for an inconsistent pair or a
                       TIE verdict, INVALID for an invalid output (as the judge counts on
                       candidates)

Intervals: percentile bootstrap over pairs (`eval.stats.mean_interval` for the means, the
same resampling vectorised for kappa), seeded. The judge may gate only when the pooled kappa
clears `eval.judge.min_kappa` and the pooled order agreement `eval.judge.min_order_agreement`.

A calibration depends on the judge (model and weights, and the server that answers: the
chat URL of the judge or of each jury member), the prompt, the data and the calibration and
decoding settings, not on the candidate: `CalibrationCache` keeps it under that key (as the
verdict cache binds URL + weights digest, eval/judge/cache.py), so it runs once per judge
rather than once per evaluation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.fs import atomic_write_text, private_dir
from eval.judge import llmbar
from eval.judge.client import Judge, JudgeClient
from eval.judge.jury import Jury
from eval.judge.pairwise import PairItem, PairVerdict, judge_pairs
from eval.judge.prompts import JudgePrompt
from eval.stats import cohen_kappa, mean_interval

# Output chosen by a verdict, by order (order 1: output 1 is A; order 2: output 2 is A).
_CHOSEN = ({"A": "1", "B": "2", "TIE": "TIE"}, {"A": "2", "B": "1", "TIE": "TIE"})
JUDGE_LABELS = ("1", "2", "TIE", "INVALID")


@dataclass(frozen=True)
class SubsetCalibration:
    subset: str
    num_pairs: int
    accuracy: float
    accuracy_interval_low: float
    accuracy_interval_high: float
    accuracy_both_orders: float
    accuracy_both_orders_interval_low: float
    accuracy_both_orders_interval_high: float
    kappa: float
    kappa_interval_low: float
    kappa_interval_high: float
    order_agreement: float
    order_agreement_interval_low: float
    order_agreement_interval_high: float
    invalid_output_rate: float
    # judge pair label -> count ("1", "2", "TIE", "INVALID")
    judge_labels: dict[str, int]
    # Published judges on this subset, beside this judge (empty where none are published).
    reference_judges: list[llmbar.ReferenceJudge] = field(default_factory=list)


@dataclass(frozen=True)
class HumanCalibration:
    label_source: str
    # "judge" (one model) or "jury" (several different models voting)
    judge_kind: str
    judge_identity: str
    jury_members: list[str]
    prompt_id: str
    # sha256 over the pinned digests of the subsets' files (eval.judge.llmbar.data_digest)
    data_sha256: str
    subsets: list[str]
    limit_per_subset: int | None
    # Pooled over every pair of every subset.
    num_pairs: int
    # Agreement of the judge's pair label with the human label (kappa's observed agreement).
    agreement: float
    accuracy: float
    accuracy_interval_low: float
    accuracy_interval_high: float
    accuracy_both_orders: float
    kappa: float
    kappa_stderr: float
    kappa_interval_low: float
    kappa_interval_high: float
    order_agreement: float
    order_agreement_interval_low: float
    order_agreement_interval_high: float
    invalid_output_rate: float
    # The floors of this evaluation, and whether both are cleared (NaN never clears).
    min_kappa: float
    min_order_agreement: float
    passed: bool
    calls: int
    seconds: float
    per_subset: list[SubsetCalibration]
    # True when this result was read from the calibration cache (no judge call made).
    cached: bool = False


@dataclass(frozen=True)
class Statistics:
    confidence: float
    resamples: int
    seed: int


def calibrate_on_human(judge: Judge, prompt: JudgePrompt, subsets: Sequence[str],
                       limit_per_subset: int | None, stats: Statistics, *, min_kappa: float,
                       min_order_agreement: float, jury_members: Sequence[str] = ()
                       ) -> HumanCalibration:
    """Judge every pair of `subsets` (first `limit_per_subset` of each) in both orders, in
    one concurrent batch, and measure the judge against the human labels."""
    pairs = [p for s in subsets for p in llmbar.load_subset(s, limit_per_subset)]
    started, calls_before = time.perf_counter(), judge.stats.requests_sent
    verdicts = judge_pairs(judge, prompt, [PairItem(p.id, p.instruction, p.output_1,
                                                    p.output_2) for p in pairs])
    scored = [_score(p.label, v) for p, v in zip(pairs, verdicts, strict=True)]
    per_subset = [_subset(s, [x for p, x in zip(pairs, scored, strict=True) if p.subset == s],
                          stats) for s in subsets]
    pooled = _subset("pooled", scored, stats)
    kappa = cohen_kappa([x.human for x in scored], [x.judge_label for x in scored])
    result = HumanCalibration(
        label_source=llmbar.SOURCE,
        judge_kind="jury" if jury_members else "judge",
        judge_identity=judge.identity, jury_members=list(jury_members),
        prompt_id=prompt.prompt_id, data_sha256=llmbar.data_digest(subsets),
        subsets=list(subsets), limit_per_subset=limit_per_subset, num_pairs=len(pairs),
        agreement=kappa.observed_agreement, accuracy=pooled.accuracy,
        accuracy_interval_low=pooled.accuracy_interval_low,
        accuracy_interval_high=pooled.accuracy_interval_high,
        accuracy_both_orders=pooled.accuracy_both_orders, kappa=pooled.kappa,
        kappa_stderr=kappa.standard_error, kappa_interval_low=pooled.kappa_interval_low,
        kappa_interval_high=pooled.kappa_interval_high,
        order_agreement=pooled.order_agreement,
        order_agreement_interval_low=pooled.order_agreement_interval_low,
        order_agreement_interval_high=pooled.order_agreement_interval_high,
        invalid_output_rate=pooled.invalid_output_rate, min_kappa=min_kappa,
        min_order_agreement=min_order_agreement, passed=False,
        calls=judge.stats.requests_sent - calls_before,
        seconds=time.perf_counter() - started, per_subset=per_subset)
    return with_floors(result, min_kappa, min_order_agreement)


def with_floors(result: HumanCalibration, min_kappa: float, min_order_agreement: float
                ) -> HumanCalibration:
    """`result` judged against this evaluation's floors (a cached calibration is measured
    once; the floors are the config's of the day)."""
    passed = result.kappa >= min_kappa and result.order_agreement >= min_order_agreement
    return dataclasses.replace(result, min_kappa=min_kappa,
                               min_order_agreement=min_order_agreement, passed=passed)


def failed_floors(result: HumanCalibration) -> list[str]:
    """Why `result` does not earn a vote, with the numbers (empty when it does)."""
    reasons = []
    where = (f"on {result.num_pairs} human-labelled LLMBar pairs "
             f"({', '.join(result.subsets)})")
    if not result.kappa >= result.min_kappa:
        reasons.append(f"human-label kappa {result.kappa:.3f} [{result.kappa_interval_low:.3f}, "
                       f"{result.kappa_interval_high:.3f}] < eval.judge.min_kappa "
                       f"{result.min_kappa} {where}")
    if not result.order_agreement >= result.min_order_agreement:
        reasons.append(f"answer-order agreement {result.order_agreement:.3f} "
                       f"[{result.order_agreement_interval_low:.3f}, "
                       f"{result.order_agreement_interval_high:.3f}] < "
                       f"eval.judge.min_order_agreement {result.min_order_agreement} {where}")
    return reasons


@dataclass(frozen=True)
class _Scored:
    human: str
    judge_label: str
    accuracy: float  # 0, 0.5 or 1: right in neither, one or both orders
    both_orders: float
    agrees: float
    invalid_outputs: int  # 0, 1 or 2


def _score(human: str, verdict: PairVerdict) -> _Scored:
    chosen = [None if raw is None else order[raw]
              for order, raw in zip(_CHOSEN, (verdict.candidate_first, verdict.champion_first),
                                    strict=True)]
    first, second = chosen
    # Consistent orders give the chosen output; inconsistent ones count as a tie.
    label = ("INVALID" if first is None or second is None
             else first if first == second else "TIE")
    right = [c == human for c in chosen]
    return _Scored(human, label, sum(right) / 2, float(all(right)),
                   float(first is not None and first == second), chosen.count(None))


def _subset(name: str, scored: Sequence[_Scored], stats: Statistics) -> SubsetCalibration:
    def mean_with_interval(values: list[float]) -> tuple[float, float, float]:
        low, high = mean_interval(values, confidence=stats.confidence,
                                  resamples=stats.resamples, seed=stats.seed)
        return (sum(values) / len(values) if values else math.nan), low, high

    accuracy = mean_with_interval([x.accuracy for x in scored])
    both = mean_with_interval([x.both_orders for x in scored])
    agreement = mean_with_interval([x.agrees for x in scored])
    humans, labels = [x.human for x in scored], [x.judge_label for x in scored]
    kappa_low, kappa_high = kappa_interval(humans, labels, stats)
    counts = {label: labels.count(label) for label in JUDGE_LABELS if label in labels}
    return SubsetCalibration(
        name, len(scored), *accuracy, *both, cohen_kappa(humans, labels).kappa, kappa_low,
        kappa_high, *agreement,
        invalid_output_rate=(sum(x.invalid_outputs for x in scored) / (2 * len(scored))
                             if scored else math.nan),
        judge_labels=counts,
        reference_judges=llmbar.reference_judges(name) if name in llmbar.SUBSETS else [])


def kappa_interval(rater_a: Sequence[str], rater_b: Sequence[str], stats: Statistics
                   ) -> tuple[float, float]:
    """Percentile bootstrap interval of Cohen's kappa, resampling items (seeded). Resamples
    where kappa is undefined (one shared category) are left out; NaN when all are."""
    n = len(rater_a)
    if n == 0:
        return math.nan, math.nan
    categories = sorted(set(rater_a) | set(rater_b))
    a = np.array([categories.index(x) for x in rater_a])
    b = np.array([categories.index(x) for x in rater_b])
    index = np.random.default_rng(stats.seed).integers(0, n, size=(stats.resamples, n))
    a_s, b_s = a[index], b[index]  # (resamples, n)
    observed = np.mean(a_s == b_s, axis=1)
    expected = sum(np.mean(a_s == c, axis=1) * np.mean(b_s == c, axis=1)
                   for c in range(len(categories)))
    defined = ~np.isclose(expected, 1.0)
    if not defined.any():
        return math.nan, math.nan
    kappas = (observed[defined] - expected[defined]) / (1 - expected[defined])
    tail = (1 - stats.confidence) / 2 * 100
    low, high = np.percentile(kappas, [tail, 100 - tail])
    return float(low), float(high)


# ---- cache -----------------------------------------------------------------------------------

# The entry's format and key recipe: bump it when either changes, so older entries are misses
# (2: the key binds the judge's chat URLs; an entry records its format and key).
CALIBRATION_CACHE_FORMAT = 2


def calibration_key(*, judge_identity: str, prompt_id: str, data_sha256: str,
                    subsets: Sequence[str], limit_per_subset: int | None, max_tokens: int,
                    logprobs: bool, stats: Statistics, endpoints: Sequence[str]) -> str:
    """What decides a calibration: the judge's identity (model name and weights digest) and
    the servers that answer (`endpoints`: `judge_endpoints`), the prompt, the data, the
    calibration settings and the decoding settings."""
    payload = json.dumps({"format": CALIBRATION_CACHE_FORMAT, "judge": judge_identity,
                          "endpoints": sorted(endpoints), "prompt_id": prompt_id,
                          "data_sha256": data_sha256, "subsets": list(subsets),
                          "limit_per_subset": limit_per_subset, "max_tokens": max_tokens,
                          "logprobs": logprobs, "statistics": dataclasses.asdict(stats)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def judge_endpoints(judge: Judge) -> list[str]:
    """The chat URLs whose verdicts make `judge`'s calibration: its own, or each jury
    member's. Another server under the same name may serve other weights or settings, so
    (as for verdicts) its calibration is its own. Hashed into the key, never written out."""
    members = judge.members if isinstance(judge, Jury) else [judge]
    return sorted(m.endpoint.chat_url for m in members if isinstance(m, JudgeClient))


class CalibrationCache:
    """One JSON file per calibration (`<root>/<key>.json`): `{"format", "key",
    "calibration"}`, written whole or not at all (common.fs). An unreadable or malformed
    entry, one of another format, or one filed under a key that is not its own is a miss:
    the calibration runs again and replaces it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def get(self, key: str) -> HumanCalibration | None:
        path = self.root / f"{key}.json"
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if not (isinstance(entry, dict) and entry.get("key") == key
                    and entry.get("format") == CALIBRATION_CACHE_FORMAT):
                return None
            result = _from_dict(HumanCalibration, entry.get("calibration"))
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: eval/cache.py evicts it last
        return dataclasses.replace(result, cached=True)

    def put(self, key: str, result: HumanCalibration) -> None:
        entry = {"format": CALIBRATION_CACHE_FORMAT, "key": key,
                 "calibration": dataclasses.asdict(result)}
        atomic_write_text(private_dir(self.root) / f"{key}.json", json.dumps(entry))


_CLASSES: dict[str, type] = {"SubsetCalibration": SubsetCalibration,
                             "ReferenceJudge": llmbar.ReferenceJudge}


def _from_dict(cls: type, data: Any) -> Any:
    """`cls` from its `dataclasses.asdict` form, checking every field's type: a cache entry
    with a missing field, an extra one, or a string where a number belongs is refused."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: not an object")
    hints = typing.get_type_hints(cls, globalns={**globals(), **_CLASSES})
    names = {f.name for f in dataclasses.fields(cls)}
    if set(data) != names:
        raise KeyError(f"{cls.__name__}: fields {sorted(set(data) ^ names)}")
    return cls(**{name: _typed(hints[name], data[name]) for name in names})


def _typed(hint: Any, value: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        if not isinstance(value, list):
            raise TypeError("not a list")
        return [_typed(args[0], v) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError("not an object")
        return {_typed(args[0], k): _typed(args[1], v) for k, v in value.items()}
    if args:  # X | None
        if value is None and type(None) in args:
            return None
        return _typed(next(a for a in args if a is not type(None)), value)
    if dataclasses.is_dataclass(hint):
        return _from_dict(typing.cast(type, hint), value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise TypeError(f"{value!r} is not {hint}")
