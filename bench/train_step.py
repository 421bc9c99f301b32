"""Benchmark: the training stage's loop against a bare PyTorch loop, in one run.

Both train the same tiny model (same seed, so the same initial weights) on the same packed
windows and batch schedule, one process, CPU. The bare loop is what you would write by hand:
forward, cross-entropy, backward, clip, AdamW step, LR step. The stage loop adds what makes it
a stage: a (1-process) DDP wrapper, the loss all-reduce, MLflow logging every step, the
progress bar and telemetry. Checkpoint and validation steps are excluded from the median
(they are set to happen only on the final step) and reported on their own.

Prints one JSON object; `ratio_median` is stage / bare (goal <= 1.03 on CPU).

    python -m bench.train_step [--steps 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from data.config import DataConfig
from data.stage import validate_dataset
from training.config import TrainConfig
from training.data import BatchSchedule, load_examples, pack_examples
from training.loop import TrainPaths, build_optimizer, lr_factor, run_training
from training.model import build_model


def bare_loop(config: TrainConfig, dataset_dir: Path) -> list[float]:
    """Per-step wall seconds of a hand-written loop."""
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(dataset_dir / "tokenizer")
    windows = pack_examples(load_examples(dataset_dir / "train.jsonl"), tokenizer,
                            config.seq_len)
    schedule = BatchSchedule(len(windows), config.global_batch_size, config.seed)
    model = build_model(config, tokenizer)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    accumulation = config.accumulation_steps(1)
    times = []
    for step in range(config.max_steps):
        started = time.perf_counter()
        for micro in schedule.rank_micro_batches(step, 0, 1, config.micro_batch_size):
            batch = windows[micro]
            logits = model(input_ids=batch[:, :-1]).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                   batch[:, 1:].reshape(-1))
            (loss / accumulation).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss)  # the stage reads the loss every step too
        times.append(time.perf_counter() - started)
    return times


def stage_loop(config: TrainConfig, dataset_dir: Path, work: Path) -> list[float]:
    result = run_training(config, TrainPaths(
        dataset_dir=dataset_dir, output_dir=work / "model", checkpoint_dir=work / "ckpt",
        mlflow_tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        mlflow_artifact_root=work / "artifacts"))
    return result.iteration_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_step")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dataset-dir", type=Path, default=None,
                        help="a validated dataset (default: validate the shipped corpus first)")
    args = parser.parse_args(argv)
    if args.steps < 3:
        parser.error("--steps must be at least 3: the first (warm-up) and the last "
                     "(checkpoint + eval) step are not timed")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    config = TrainConfig(max_steps=args.steps, checkpoint_every_steps=args.steps,
                         eval_every_steps=args.steps, warmup_steps=min(5, args.steps))
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-") as tmp:
        root = Path(tmp)
        dataset_dir = args.dataset_dir or validate_dataset(DataConfig(),
                                                           root / "dataset").output_dir
        bare: list[float] = []
        stage: list[float] = []
        final_step_stage: list[float] = []
        for round_index in range(args.rounds):  # alternate to cancel slow drift
            bare.extend(bare_loop(config, dataset_dir)[1:])  # drop warm-up step
            times = stage_loop(config, dataset_dir, root / f"stage-{round_index}")
            stage.extend(times[1:-1])  # drop warm-up and the checkpoint+eval step
            final_step_stage.append(times[-1])
    report = {
        "benchmark": "train_step",
        "model_preset": config.model_preset,
        "tokens_per_step": config.global_batch_size * config.seq_len,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "bare_step_seconds_median": statistics.median(bare),
        "stage_step_seconds_median": statistics.median(stage),
        "bare_step_seconds_mean": statistics.fmean(bare),
        "stage_step_seconds_mean": statistics.fmean(stage),
        "ratio_median": statistics.median(stage) / statistics.median(bare),
        "ratio_mean": statistics.fmean(stage) / statistics.fmean(bare),
        "stage_final_step_with_checkpoint_and_eval_seconds": statistics.fmean(final_step_stage),
        "goal_ratio": 1.03,
    }
    report["meets_goal"] = report["ratio_median"] <= report["goal_ratio"]
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
