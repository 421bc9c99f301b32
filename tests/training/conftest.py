"""Helpers to run the real training entry point under torchrun, as Flyte Elastic does."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flytekit.types.directory import FlyteDirectory

from common.digests import sha256_file
from tasks.contracts import ValidatedDataset
from tests.conftest import subprocess_env

# Short but long enough to cross warmup, two checkpoints and a validation pass.
TEST_TRAIN = {"max_steps": 12, "checkpoint_every_steps": 4, "eval_every_steps": 6,
              "warmup_steps": 3, "eval_batches": 2}


@dataclass
class RankRun:
    returncode: int
    output: str
    result: dict[str, Any] | None
    output_dir: Path
    checkpoint_dir: Path


def torchrun_command(nproc: int, config: dict[str, Any], dataset_dir: Path, work: Path
                     ) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", "-m", "training.launch",
        "--config-json", json.dumps(config), "--dataset-dir", str(dataset_dir),
        "--output-dir", str(work / "model"), "--checkpoint-dir", str(work / "checkpoints"),
        "--result-json", str(work / "result.json"),
    ]


def run_ranks(nproc: int, config: dict[str, Any], dataset_dir: Path, work: Path,
              home: Path, timeout_seconds: float = 600) -> RankRun:
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        torchrun_command(nproc, config, dataset_dir, work), env=subprocess_env(home),
        capture_output=True, text=True, timeout=timeout_seconds,
    )
    result_path = work / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else None
    return RankRun(proc.returncode, proc.stdout + proc.stderr, result, work / "model",
                   work / "checkpoints")


@contextmanager
def moto_s3(bucket: str) -> Iterator[str]:
    """A real S3 API on loopback (moto in server mode) holding one empty bucket; its URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing",
                 ).create_bucket(Bucket=bucket)
    try:
        yield endpoint
    finally:
        server.stop()


def validated_dataset(dataset_dir: Path, token_files: list[str] | None = None
                      ) -> ValidatedDataset:
    """What validate_data hands train about `dataset_dir`'s train/validation splits (and the
    named token files), by their current digests."""
    splits = ("train", "validation")
    return ValidatedDataset(
        files=FlyteDirectory(str(dataset_dir)),
        split_digests={split: sha256_file(dataset_dir / f"{split}.jsonl") for split in splits},
        split_rows={"train": 1, "validation": 1}, tokenizer_digest="7" * 64,
        report_digest="8" * 64,
        token_file_digests={name: sha256_file(dataset_dir / name) for name in token_files or []},
    )
