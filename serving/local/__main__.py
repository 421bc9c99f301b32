"""`python -m serving.local --model DIR --served-model-name NAME --port N`:
the local OpenAI-compatible engine, in the same argument shape as vLLM's api_server."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# How long in-flight requests get to finish after SIGTERM before the server exits anyway.
GRACEFUL_SHUTDOWN_SECONDS = 30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.local")
    parser.add_argument("--model", type=Path, required=True, help="HF model directory")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="context in tokens (default: the model's)")
    parser.add_argument("--max-running-requests", type=int, default=4)
    parser.add_argument("--max-waiting-requests", type=int, default=64)
    parser.add_argument("--num-threads", type=int, default=1,
                        help="torch intra-op threads (1 suits small models on shared cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    # Heavy imports after argument parsing, so --help is instant.
    import prometheus_client
    import torch
    import uvicorn

    from serving.local.app import build_app
    from serving.local.model import LocalModel
    from serving.local.service import LocalService, ServiceLimits

    # vLLM's /metrics has no `_created` series; neither should ours.
    prometheus_client.disable_created_metrics()
    torch.set_num_threads(args.num_threads)
    model = LocalModel(args.model, max_model_len=args.max_model_len)
    service = LocalService(
        model, args.served_model_name, str(args.model),
        ServiceLimits(args.max_running_requests, args.max_waiting_requests),
    )
    app = build_app(service)
    # uvicorn handles SIGTERM gracefully: stop accepting, finish in-flight requests.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS, access_log=False)
    service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
