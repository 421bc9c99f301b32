"""A jury: several DIFFERENT judge models vote on each pairwise prompt (PoLL-style).

Each member answers every prompt (through its own client: its concurrency, retries and
cache); the jury's verdict for a prompt is the plurality of the members' valid verdicts,
TIE when the top verdicts are level, invalid when no member gave a valid one. A jury of one
model asked several times (or with several prompts) is not a jury: its errors are not
independent, so members must be distinct models (distinct identities: name, and digest when
known), at least two of them, or the jury is refused.

Pairwise verdicts only (A / B / TIE): the rubric grades stay a single judge's.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

from eval.errors import EvalError
from eval.judge.client import CallPolicy, CallStats, JudgeClient, JudgeReply, JudgeRequest
from eval.judge.parsing import parse_pairwise


class Jury:
    def __init__(self, members: Sequence[JudgeClient]) -> None:
        identities = [m.identity for m in members]
        duplicates = sorted({i for i in identities if identities.count(i) > 1})
        if len(members) < 2 or duplicates:
            raise EvalError("EVAL_JUDGE_JURY_INVALID",
                            f"a jury needs at least two DIFFERENT judge models; got "
                            f"{identities} (repeated: {duplicates}). One model with several "
                            "prompts or samples is one judge: configure it as a single judge, "
                            "or add another model.")
        self.members = list(members)
        # Cache keys and decoding settings come from the first member; each member re-keys
        # its own calls (see `complete_all`).
        self.policy: CallPolicy = members[0].policy
        self.stats = CallStats()

    @property
    def identity(self) -> str:
        return "jury[" + ", ".join(sorted(m.identity for m in self.members)) + "]"

    @property
    def member_identities(self) -> list[str]:
        return [m.identity for m in self.members]

    def complete_all(self, requests: list[JudgeRequest]) -> list[JudgeReply]:
        votes = []
        for member in self.members:
            # The same prompt is a different call per member: never one member's cached
            # verdict for another's.
            keyed = [JudgeRequest(r.prompt, _member_key(member.identity, r.cache_key))
                     for r in requests]
            before = _snapshot(member.stats)
            votes.append(member.complete_all(keyed))
            self._add_stats(member.stats, before)
        return [plurality([member_votes[i] for member_votes in votes])
                for i in range(len(requests))]

    def _add_stats(self, stats: CallStats, before: CallStats) -> None:
        for name in ("requests_sent", "cache_hits", "retries", "failures", "prompt_tokens",
                     "completion_tokens", "wall_seconds"):
            setattr(self.stats, name,
                    getattr(self.stats, name) + getattr(stats, name) - getattr(before, name))
        for error, count in stats.errors.items():
            new = count - before.errors.get(error, 0)
            if new:
                self.stats.errors[error] = self.stats.errors.get(error, 0) + new


def plurality(replies: Sequence[JudgeReply]) -> JudgeReply:
    """The members' most frequent valid verdict; TIE when the top two are level."""
    counts = Counter(v for r in replies if (v := parse_pairwise(r.text)) is not None)
    if not counts:
        errors = "; ".join(r.error or repr(r.text) for r in replies)
        return JudgeReply(None, None, error=f"no member gave a valid verdict: {errors}")
    (top, top_count), *rest = counts.most_common()
    verdict = "TIE" if rest and rest[0][1] == top_count else top
    return JudgeReply(verdict, None, sum(r.prompt_tokens for r in replies),
                      sum(r.completion_tokens for r in replies),
                      cached=all(r.cached for r in replies))


def _member_key(identity: str, key: str) -> str:
    return hashlib.sha256(f"{identity}\n{key}".encode()).hexdigest()


def _snapshot(stats: CallStats) -> CallStats:
    return CallStats(stats.requests_sent, stats.cache_hits, stats.retries, stats.failures,
                     stats.prompt_tokens, stats.completion_tokens, stats.wall_seconds,
                     dict(stats.errors))
