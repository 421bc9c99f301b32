"""Benchmark: latency the local weighted router adds in front of an engine, in one run.

One local engine (tiny random Llama, or --model-dir) and one router in front of it, both on
127.0.0.1. The same requests go alternately straight to the engine and through the router,
over keep-alive connections, sequentially (no queueing), so the difference of the two latency
distributions is the router's cost: an extra loopback hop, the routing decision, the per-
backend metrics and the streaming copy.

Prints one JSON object; `added_p99_ms` per endpoint is routed p99 - direct p99 (goal <= 2 ms).

    python -m bench.router_overhead [--requests 1000] [--warmup 20] [--model-dir DIR]

The router is started the way deploy starts it (deploy/local_backend.py): an admin listener
on its own port with a 0600 token file, and an allow-list naming the engine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common.settings import PROJECT_ROOT
from serving.engine import start_engine
from serving.process import (
    free_port,
    spawn,
    stop_process_group,
    wait_until_healthy,
)
from serving.router_admin import write_admin_token, write_allowed_backends
from serving.vllm_engine import local_environment

GOAL_ADDED_P99_MS = 2.0
NAME = "bench"


def timed(connection: http.client.HTTPConnection, method: str, path: str,
          body: bytes | None) -> float:
    headers = {"Content-Type": "application/json"} if body else {}
    began = time.perf_counter()
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    elapsed = time.perf_counter() - began
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: HTTP {response.status}")
    return elapsed


def quantile_ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(engine_port: int, router_port: int, method: str, path: str, body: bytes | None,
            num_requests: int, warmup: int = 20) -> dict[str, float]:
    direct = http.client.HTTPConnection("127.0.0.1", engine_port, timeout=60)
    routed = http.client.HTTPConnection("127.0.0.1", router_port, timeout=60)
    for _ in range(warmup):  # warm up connections, caches, the router's connection pool
        timed(direct, method, path, body)
        timed(routed, method, path, body)
    d, r = [], []
    for _ in range(num_requests):
        d.append(timed(direct, method, path, body))
        r.append(timed(routed, method, path, body))
    direct.close()
    routed.close()
    out = {}
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        out[f"direct_{label}_ms"] = round(quantile_ms(d, q), 3)
        out[f"routed_{label}_ms"] = round(quantile_ms(r, q), 3)
        out[f"added_{label}_ms"] = round(quantile_ms(r, q) - quantile_ms(d, q), 3)
    out["added_mean_ms"] = round(1000 * (statistics.fmean(r) - statistics.fmean(d)), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.router_overhead")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=20,
                        help="untimed requests per endpoint and path first")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="HF model directory (default: a tiny random Llama)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-") as tmp:
        model_dir = args.model_dir or _tiny_model(Path(tmp) / "model")
        with start_engine("local", model_dir, NAME, log_dir=Path(tmp)) as engine:
            port = free_port()
            router = spawn(_router_command(port, engine.base_url, Path(tmp)),
                           env=local_environment(os.environ, PROJECT_ROOT),
                           log_path=Path(tmp) / "router.log")
            try:
                wait_until_healthy(f"http://127.0.0.1:{port}/health", router, pid=router.pid,
                                   timeout_seconds=30, log_path=Path(tmp) / "router.log",
                                   what="router")
                completion = json.dumps({"model": NAME, "prompt": "What is 1 + 2?",
                                         "max_tokens": 1, "temperature": 0}).encode()
                results = {
                    "GET /v1/models": measure(engine.port, port, "GET", "/v1/models", None,
                                              args.requests, args.warmup),
                    "POST /v1/completions max_tokens=1": measure(
                        engine.port, port, "POST", "/v1/completions", completion,
                        max(args.requests // 4, min(50, args.requests)), args.warmup),
                }
            finally:
                stop_process_group(router.pid, router, grace_seconds=10)
    report = {
        "benchmark": "router_overhead",
        "requests": args.requests,
        "results": results,
        "goal_added_p99_ms": GOAL_ADDED_P99_MS,
        "goal_met": all(r["added_p99_ms"] <= GOAL_ADDED_P99_MS for r in results.values()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(json.dumps(report, indent=1))
    return 0


def _router_command(port: int, engine_url: str, tmp: Path) -> list[str]:
    token_path, allowed_path = tmp / "router-admin.token", tmp / "allowed-backends.json"
    write_admin_token(token_path)
    write_allowed_backends(allowed_path, [engine_url])
    return [sys.executable, "-m", "serving.router", "--port", str(port),
            "--backend", f"stable={engine_url}", "--weight", "stable=100",
            "--admin-port", str(free_port()), "--admin-token-file", str(token_path),
            "--allowed-backends-file", str(allowed_path)]


def _tiny_model(out: Path) -> Path:
    from testing.tiny_model import build_tiny_model

    return build_tiny_model(out)


if __name__ == "__main__":
    raise SystemExit(main())
