"""Benchmark: eval-stage wall time on the tiny suite, per model path.

For each model path, `eval.stage.run_eval` (suite, harness, canary, gate, report; no
champion, no judge) runs twice on the same model: cold (empty response cache) and warm
(lm-eval's per-digest response cache filled by the cold run). The local-completions path
runs against a serving engine started on the model directory (its start-up is reported on
its own). Also reports how far the two paths' per-item values are apart.

Prints one JSON object.

    python -m bench.eval_suite [--model-dir DIR] [--limit 100] [--engine local|vllm]

Without --model-dir the tiny preset is trained for --train-steps steps first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from common.digests import model_root_digest
from eval.config import EvalConfig
from eval.harness import HarnessResult, ModelSource
from eval.stage import run_eval


def train_tiny(work: Path, steps: int) -> Path:
    from data.config import DataConfig
    from data.stage import validate_dataset
    from training.config import TrainConfig
    from training.loop import TrainPaths, run_training

    dataset = validate_dataset(DataConfig(), work / "dataset").output_dir
    config = TrainConfig(max_steps=steps, warmup_steps=min(20, steps // 4),
                         checkpoint_every_steps=steps, eval_every_steps=steps)
    result = run_training(config, TrainPaths(dataset, work / "model", work / "ckpt",
                                             f"sqlite:///{work / 'mlflow.db'}",
                                             work / "mlartifacts"))
    return Path(result.model_dir)


def timed_stage(config: EvalConfig, source: ModelSource, work: Path, cache: Path
                ) -> tuple[float, HarnessResult]:
    started = time.perf_counter()
    outcome = run_eval(config, source, work_dir=work, cache_dir=cache)
    return time.perf_counter() - started, outcome.candidate


def max_abs_difference(a: HarnessResult, b: HarnessResult) -> dict[str, float]:
    out = {}
    for task in a.samples:
        theirs = b.by_doc_hash(task)
        out[task] = max((abs(v - theirs[s.doc_hash].metrics[m])
                         for s in a.samples[task] for m, v in s.metrics.items()), default=0.0)
    return out


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from serving.engine import start_engine

    model_dir = args.model_dir or train_tiny(work / "train", args.train_steps)
    digest = model_root_digest(model_dir)
    config = EvalConfig(limit_per_task=args.limit, registered_model_name=None)
    results: dict[str, Any] = {}
    harness: dict[str, HarnessResult] = {}

    # Untimed warm-up: the first run in a process pays for importing torch, transformers,
    # datasets and lm-eval (10-20 s here), which is no property of either model path.
    started = time.perf_counter()
    timed_stage(EvalConfig(limit_per_task=2, registered_model_name=None),
                ModelSource(model_dir, digest), work / "warmup", work / "warmup-cache")
    import_seconds = time.perf_counter() - started
    cold, harness["hf"] = timed_stage(config, ModelSource(model_dir, digest), work / "hf",
                                      work / "cache")
    warm, _ = timed_stage(config, ModelSource(model_dir, digest), work / "hf2", work / "cache")
    results["hf"] = {"stage_seconds_cold": cold, "stage_seconds_cached": warm,
                     "harness_seconds_cold": harness["hf"].wall_seconds}

    started = time.perf_counter()
    with start_engine(args.engine, model_dir, "bench", log_dir=work / "logs") as engine:
        engine_seconds = time.perf_counter() - started
        source = ModelSource(model_dir, digest, "local-completions", base_url=engine.base_url,
                             served_model_name="bench")
        cold, harness["api"] = timed_stage(config, source, work / "api", work / "cache")
        warm, _ = timed_stage(config, source, work / "api2", work / "cache")
    results["local-completions"] = {
        "engine": args.engine, "engine_start_seconds": engine_seconds,
        "stage_seconds_cold": cold, "stage_seconds_cached": warm,
        "harness_seconds_cold": harness["api"].wall_seconds}

    return {
        "benchmark": "eval_suite",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "model_digest": digest,
        "documents_per_task": args.limit,
        "warmup_seconds_imports_included": import_seconds,
        "tasks": config.tasks,
        "paths": results,
        "metrics_hf": harness["hf"].metrics,
        "max_abs_per_item_difference_between_paths": max_abs_difference(harness["hf"],
                                                                        harness["api"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eval_suite")
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--limit", type=int, default=100, help="documents per task")
    parser.add_argument("--engine", default="local", choices=("local", "vllm"))
    args = parser.parse_args(argv)
    for key in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")

    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        report = run(args, Path(tmp))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
