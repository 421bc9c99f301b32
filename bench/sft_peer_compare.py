"""The comparison of bench/sft_peer.py: the two trainers' loss curves, learning rates and grad
norms step by step, their throughput over the steady steps, and their peak RSS."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from bench.sft_peer_trainers import scheduled_examples

# fp32 on both sides with reduction orders that differ (batch widths, TRL's tiled LM head,
# fused vs foreach AdamW): agreement to ~1e-6 relative is expected; a loss differing by more
# than this, relative, at any step means the two trainers do not train the same thing.
LOSS_RELATIVE_TOLERANCE = 1e-4
GOAL_TOKENS_PER_SECOND_RATIO = 1.0
T = TypeVar("T")
TRAINERS = ("shipyard", "trl")


def step_tokens(config_fields: dict[str, Any], dataset_dir: Path) -> dict[str, list[int]]:
    """Loss (assistant) tokens and example tokens of each step's global batch."""
    from training.config import TrainConfig

    config = TrainConfig(**config_fields)
    rows = scheduled_examples(config, dataset_dir)
    per_step = config.global_batch_size
    chunks = [rows[i:i + per_step] for i in range(0, len(rows), per_step)]
    return {"loss_tokens": [sum(sum(mask[1:]) for _, mask in chunk) for chunk in chunks],
            "example_tokens": [sum(len(ids) for ids, _ in chunk) for chunk in chunks]}


def _steady(values: list[T]) -> list[T]:
    """Leave out the first step (warm-up) and the last (Shipyard validates there)."""
    return values[1:-1] if len(values) >= 3 else values


def throughput(runs: list[dict[str, Any]], tokens: dict[str, list[int]]) -> dict[str, float]:
    """Tokens per wall and per CPU second over the steady steps of every round."""
    wall = [s for run in runs for s in _steady(run["step_seconds"])]
    cpu = [s for run in runs for s in _steady(run["step_cpu_seconds"])]
    loss = sum(_steady(tokens["loss_tokens"])) * len(runs)
    example = sum(_steady(tokens["example_tokens"])) * len(runs)
    return {
        "steady_steps": len(wall), "steady_wall_seconds": sum(wall),
        "steady_cpu_seconds": sum(cpu),
        "loss_tokens_per_second": loss / sum(wall),
        "example_tokens_per_second": example / sum(wall),
        "loss_tokens_per_cpu_second": loss / sum(cpu),
        "example_tokens_per_cpu_second": example / sum(cpu),
    }


def _max_difference(ours: list[float], theirs: list[float], relative: bool) -> float:
    return max(abs(a - b) / (max(abs(b), 1e-12) if relative else 1.0)
               for a, b in zip(ours, theirs, strict=True))


def compare(rounds: list[dict[str, dict[str, Any]]], tokens: dict[str, list[int]]
            ) -> dict[str, Any]:
    """Loss curves (of the first round; every round must repeat them exactly), throughput
    (all rounds) and peak RSS (the largest of the rounds) of one fine-tuning method."""
    first = rounds[0]
    ours, theirs = first["shipyard"], first["trl"]
    worst = _max_difference(ours["losses"], theirs["losses"], relative=True)
    speed = {trainer: throughput([r[trainer] for r in rounds], tokens) for trainer in TRAINERS}
    ratio = (speed["shipyard"]["loss_tokens_per_second"]
             / speed["trl"]["loss_tokens_per_second"])
    return {
        "losses": {"shipyard": ours["losses"], "trl": theirs["losses"]},
        "max_abs_loss_difference": _max_difference(ours["losses"], theirs["losses"], False),
        "max_relative_loss_difference": worst,
        "loss_relative_tolerance": LOSS_RELATIVE_TOLERANCE,
        "losses_within_tolerance": worst <= LOSS_RELATIVE_TOLERANCE,
        "losses_repeat_exactly_across_rounds": all(
            r[t]["losses"] == first[t]["losses"] for r in rounds for t in TRAINERS),
        "max_abs_learning_rate_difference": _max_difference(
            ours["learning_rates"], theirs["learning_rates"], relative=False),
        "max_relative_grad_norm_difference": _max_difference(
            ours["grad_norms"], theirs["grad_norms"], relative=True),
        "initial_weights_equal": (ours["initial_trainable_digest"]
                                  == theirs["initial_trainable_digest"]),
        "decay_groups_equal": ours["decay_parameter_count"] == theirs["decay_parameter_count"],
        "tokens_per_step": tokens,
        "throughput": speed,
        "ratio_basis": "loss (assistant) tokens per second over the steady steps; both "
                       "trainers process the same examples per step, so the example-token "
                       "ratio is the same",
        "tokens_per_second_ratio_shipyard_over_trl": ratio,
        "tokens_per_cpu_second_ratio_shipyard_over_trl": (
            speed["shipyard"]["loss_tokens_per_cpu_second"]
            / speed["trl"]["loss_tokens_per_cpu_second"]),
        "goal_ratio": GOAL_TOKENS_PER_SECOND_RATIO,
        "meets_goal": ratio >= GOAL_TOKENS_PER_SECOND_RATIO,
        "peak_rss_bytes": {t: max(r[t]["peak_rss_bytes"] for r in rounds) for t in TRAINERS},
        "runs": rounds,
    }
