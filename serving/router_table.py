"""The router's routing table: backends, weights, faults and the canary lease.

The split is smooth weighted round-robin (nginx's), exact over each cycle. A positive weight on
any backend but `stable` holds a lease; when it lapses unrenewed the table itself puts all
traffic back on `stable` (`expire`) and later renewals raise `LeaseLost`. No I/O here: the
router (serving/router.py) and its admin handlers (serving/router_control.py) drive it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

STABLE = "stable"
# A canary weight set without `lease_seconds` holds this long unless renewed.
DEFAULT_CANARY_LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class FaultSpec:
    added_latency_seconds: float = 0.0
    error_rate: float = 0.0  # fraction of requests the router answers with `error_status`
    error_status: int = 503

    def __post_init__(self) -> None:
        if self.added_latency_seconds < 0 or not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("added_latency_seconds must be >= 0 and error_rate in [0, 1]")
        if not 400 <= self.error_status <= 599:
            raise ValueError("error_status must be a 4xx or 5xx code")


class LeaseLost(ValueError):
    """A renewal came after the canary lease lapsed (the router already reverted)."""


@dataclass
class RoutingTable:
    backends: dict[str, str] = field(default_factory=dict)  # name -> base URL
    weights: dict[str, int] = field(default_factory=dict)
    faults: dict[str, FaultSpec] = field(default_factory=dict)
    default_lease_seconds: float = DEFAULT_CANARY_LEASE_SECONDS
    clock: Callable[[], float] = time.monotonic
    # While a backend other than `stable` has a positive weight: when that weight lapses
    # (clock seconds), unless renewed. None: nothing to supervise.
    lease_expires_at: float | None = None
    lease_seconds: float | None = None
    lapsed: list[dict[str, Any]] = field(default_factory=list)  # what each lapse reverted
    _current: dict[str, int] = field(default_factory=dict)

    def set(self, backends: Mapping[str, str] | None = None,
            weights: Mapping[str, int] | None = None,
            lease_seconds: float | None = None) -> None:
        new_backends = dict(self.backends if backends is None else backends)
        new_weights = dict(self.weights if weights is None else weights)
        new_weights = {n: w for n, w in new_weights.items() if n in new_backends}
        unknown = sorted(set(weights or {}) - set(new_backends))
        if unknown:
            raise ValueError(f"weights for unknown backends {unknown}")
        if any(w < 0 for w in new_weights.values()):
            raise ValueError("weights must be >= 0")
        if new_backends and sum(new_weights.values()) <= 0:
            raise ValueError("at least one backend needs a positive weight")
        if lease_seconds is not None and not 0 < lease_seconds <= 3600:
            raise ValueError("lease_seconds must be in (0, 3600]")
        self.backends, self.weights = new_backends, new_weights
        self._current = {n: 0 for n in new_weights}
        if self.supervised():
            self.lease_seconds = lease_seconds or self.default_lease_seconds
            self.lease_expires_at = self.clock() + self.lease_seconds
        else:
            self.lease_seconds = self.lease_expires_at = None

    def supervised(self) -> bool:
        """Whether any traffic goes to a backend other than `stable` (a canary)."""
        return any(w > 0 for n, w in self.weights.items() if n != STABLE)

    def renew(self, lease_seconds: float | None = None) -> None:
        """Extend the canary lease from now; LeaseLost once it lapsed or where none is held."""
        self.expire()
        if self.lease_expires_at is None:
            raise LeaseLost("no canary lease to renew: it lapsed (all traffic went back to "
                            "stable) or no canary has a weight")
        if lease_seconds is not None and not 0 < lease_seconds <= 3600:
            raise ValueError("lease_seconds must be in (0, 3600]")
        self.lease_seconds = lease_seconds or self.lease_seconds
        assert self.lease_seconds is not None
        self.lease_expires_at = self.clock() + self.lease_seconds

    def expire(self) -> bool:
        """Revert to `stable` only if the canary lease lapsed; True when it did just now."""
        if self.lease_expires_at is None or self.clock() < self.lease_expires_at:
            return False
        reverted = {n: w for n, w in self.weights.items() if n != STABLE and w > 0}
        self.weights = {n: (100 if n == STABLE else 0) for n in self.weights}
        if STABLE in self.backends and STABLE not in self.weights:
            self.weights[STABLE] = 100
        # No stable backend: every weight is 0 and requests get 503, never the canary.
        self._current = {n: 0 for n in self.weights}
        self.lapsed.append({"at": time.time(), "reverted_weights": reverted,
                            "lease_seconds": self.lease_seconds})
        self.lease_seconds = self.lease_expires_at = None
        logger.warning("canary lease lapsed with no renewal: weights %s reverted to 0, all "
                       "traffic to %s", reverted, STABLE)
        return True

    def lease_state(self) -> dict[str, Any]:
        left = None if self.lease_expires_at is None else \
            round(max(0.0, self.lease_expires_at - self.clock()), 3)
        return {"held": self.lease_expires_at is not None, "lease_seconds": self.lease_seconds,
                "expires_in_seconds": left, "lapsed": list(self.lapsed[-10:])}

    def pick(self) -> tuple[str, str] | None:
        """Smooth weighted round-robin: deterministic and exact over each cycle."""
        self.expire()
        total = 0
        best: str | None = None
        for name, weight in self.weights.items():
            if weight <= 0:
                continue
            self._current[name] += weight
            total += weight
            if best is None or self._current[name] > self._current[best]:
                best = name
        if best is None:
            return None
        self._current[best] -= total
        return best, self.backends[best]

