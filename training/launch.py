"""Command-line entry for one training rank: ``torchrun ... -m training.launch``.

The Flyte task calls `run_training` directly inside its Elastic workers; this entry runs the
same function under plain torchrun (tests, benchmarks, debugging on a GPU box).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from common.errors import StageError
from common.fs import SHARED_FILE_MODE, atomic_write_text
from common.settings import load_settings
from training.config import TrainConfig
from training.loop import TrainPaths, run_training
from training.storage import is_object_store_uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.launch")
    parser.add_argument("--config-json", default="{}", help="TrainConfig fields as JSON")
    parser.add_argument("--dataset-dir", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--checkpoint-dir",
                        help="local directory or object-store URI (s3://bucket/prefix); "
                             "default: train.checkpoint_dir from --config-json")
    parser.add_argument("--result-json", type=Path, help="rank 0 writes the result here")
    args = parser.parse_args(argv)
    try:
        config = TrainConfig(**json.loads(args.config_json))
    except TypeError as exc:
        raise SystemExit(f"--config-json: {exc}") from exc
    except StageError as exc:
        print(exc, flush=True)
        return 2
    location = args.checkpoint_dir or config.checkpoint_dir
    if location is None:
        raise SystemExit("--checkpoint-dir: required when train.checkpoint_dir is unset")
    settings = load_settings()
    paths = TrainPaths(args.dataset_dir, args.output_dir,
                       location if is_object_store_uri(location) else Path(location),
                       settings.mlflow_tracking_uri, settings.mlflow_artifact_root)
    try:
        result = run_training(config, paths)
    except StageError as exc:
        print(exc, flush=True)
        return 2
    # Global rank 0 only (`result.rank`), as --help says: with several nodes on one shared
    # file system every rank sees the model directory, and all of them racing on one temp
    # file made the losers fail the job after a successful run (FileNotFoundError on rename).
    if args.result_json is not None and result.rank == 0 and result.model_dir.exists():
        payload = dataclasses.asdict(result)
        payload["model_dir"] = str(result.model_dir)
        payload["adapter_dir"] = None if result.adapter_dir is None else str(result.adapter_dir)
        atomic_write_text(args.result_json, json.dumps(payload, indent=1),
                          mode=SHARED_FILE_MODE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
