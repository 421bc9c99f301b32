"""Benchmark: real vLLM (CPU build) started compiled (the default) vs with `--enforce-eager`
(`deploy.enforce_eager`, set by the tiny preset): time to healthy and request latency.

Three starts of the same model, one after the other, each measured from spawn to `/health`
answering: compiled with an empty torch.compile cache (a fresh machine), compiled with that
cache warm (every later start), and eager. The compiled warm-cache engine is the baseline for
latency: after a warm-up, `--requests` sequential completions of `--max-tokens` tokens at
concurrency 1 and the same at concurrency 8 (tokens/s, p50/p99), via the same client as
`bench.local_engine_throughput`. Needs the vLLM CPU venv (`make pipeline` creates it).
`--engine local` runs the same three starts on the local engine (which is always eager): it
measures nothing about vLLM and is there so the script can be smoke-tested without vLLM.

    python -m bench.vllm_eager [--requests 48] [--max-tokens 16] [--model-dir DIR]
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.local_engine_throughput import NAME, load_arguments, model_or_tiny, run_level
from serving.engine import start_engine


def measure(model_dir: Path, log_dir: Path, *, eager: bool, requests: int,
            max_tokens: int, engine_kind: str = "vllm") -> dict[str, Any]:
    began = time.monotonic()
    with start_engine(engine_kind, model_dir, NAME, log_dir=log_dir, enforce_eager=eager,
                      ready_timeout_seconds=900) as engine:
        started = time.monotonic() - began
        run_level(engine.port, 2, 8, max_tokens)  # warm-up (first shapes)
        levels = [run_level(engine.port, c, requests, max_tokens) for c in (1, 8)]
    return {"start_seconds": round(started, 1), "levels": levels}


def main(argv: list[str] | None = None) -> int:
    args = load_arguments("python -m bench.vllm_eager", 16, argv, engines=("vllm", "local"))
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-") as tmp:
        model_dir = model_or_tiny(args.model_dir, Path(tmp))
        # an empty compile cache for this run only (serving.vllm_engine keeps a caller's value)
        os.environ["VLLM_CACHE_ROOT"] = str(Path(tmp) / "vllm-cache")
        runs = {}
        for label, eager in (("compiled_cold_cache", False), ("compiled_warm_cache", False),
                             ("eager", True)):
            runs[label] = measure(model_dir, Path(tmp) / label, eager=eager,
                                  requests=args.requests, max_tokens=args.max_tokens,
                                  engine_kind=args.engine)
    baseline, eager_run = runs["compiled_warm_cache"], runs["eager"]
    report = {
        "benchmark": "vllm_eager",
        "engine": args.engine,
        "model": str(args.model_dir or "tiny random Llama (testing/tiny_model.py)"),
        "max_tokens": args.max_tokens,
        "runs": runs,
        "eager_vs_compiled_warm": {
            "start_seconds_saved": round(baseline["start_seconds"] - eager_run["start_seconds"],
                                         1),
            "start_seconds_saved_vs_cold_cache": round(
                runs["compiled_cold_cache"]["start_seconds"] - eager_run["start_seconds"], 1),
            **{f"tokens_per_second_ratio_c{b['concurrency']}": round(
                e["generated_tokens_per_second"] / b["generated_tokens_per_second"], 3)
               for b, e in zip(baseline["levels"], eager_run["levels"], strict=True)},
            **{f"p50_ratio_c{b['concurrency']}": round(e["latency_p50_ms"] / b["latency_p50_ms"], 3)
               for b, e in zip(baseline["levels"], eager_run["levels"], strict=True)},
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
