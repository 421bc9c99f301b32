"""Benchmark: the local engine's generation throughput on the tiny model, at concurrency 1 and 8.

One local engine on 127.0.0.1 (tiny random Llama, or --model-dir); closed-loop clients each
send completions with a fixed `max_tokens` (greedy; EOS is not special-cased, so the count of
generated tokens comes from `usage`). Reports generated tokens/s, requests/s and latency
percentiles per concurrency level.

    python -m bench.local_engine_throughput [--requests 48] [--max-tokens 64] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

from serving.engine import start_engine

NAME = "bench"
PROMPTS = ("What is 17 + 25?", "Reverse the word 'tiri'.", "Write 'zageb' in capitals.",
           "What is the capital of Monaholm?")


def run_level(port: int, concurrency: int, num_requests: int, max_tokens: int) -> dict[str, float]:
    latencies: list[float] = []
    tokens: list[int] = []
    lock = threading.Lock()
    counter = iter(range(num_requests))

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            body = json.dumps({"model": NAME, "prompt": PROMPTS[index % len(PROMPTS)],
                               "max_tokens": max_tokens, "temperature": 0}).encode()
            began = time.perf_counter()
            connection.request("POST", "/v1/completions", body=body,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = json.loads(response.read())
            elapsed = time.perf_counter() - began
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {payload}")
            with lock:
                latencies.append(elapsed)
                tokens.append(int(payload["usage"]["completion_tokens"]))
        connection.close()

    began = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "generated_tokens": sum(tokens),
        "wall_seconds": round(wall, 3),
        "generated_tokens_per_second": round(sum(tokens) / wall, 1),
        "requests_per_second": round(len(latencies) / wall, 2),
        "latency_p50_ms": round(1000 * ordered[len(ordered) // 2], 1),
        "latency_p99_ms": round(1000 * ordered[min(len(ordered) - 1,
                                                   int(0.99 * len(ordered)))], 1),
    }


def load_arguments(prog: str, max_tokens: int, argv: list[str] | None,
                   engines: tuple[str, ...] | None = None) -> argparse.Namespace:
    """--requests, --max-tokens and --model-dir, shared by the engine benchmarks; --engine
    too when a benchmark can run on several `engines` (the first is the default)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=max_tokens)
    parser.add_argument("--model-dir", type=Path, default=None)
    if engines:
        parser.add_argument("--engine", choices=engines, default=engines[0])
    return parser.parse_args(argv)


def model_or_tiny(model_dir: Path | None, tmp: Path) -> Path:
    """`model_dir`, or a tiny random Llama built in `tmp`."""
    if model_dir is not None:
        return model_dir
    from testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp / "model")


def main(argv: list[str] | None = None) -> int:
    args = load_arguments("python -m bench.local_engine_throughput", 64, argv)
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-") as tmp:
        model_dir = model_or_tiny(args.model_dir, Path(tmp))
        with start_engine("local", model_dir, NAME, log_dir=Path(tmp)) as engine:
            run_level(engine.port, 2, 8, args.max_tokens)  # warm-up
            levels = [run_level(engine.port, c, args.requests, args.max_tokens) for c in (1, 8)]
    report = {
        "benchmark": "local_engine_throughput",
        "model": str(args.model_dir or "tiny random Llama (tests/deploy/tiny_model.py)"),
        "max_tokens": args.max_tokens,
        "levels": levels,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
