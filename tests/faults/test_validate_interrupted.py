"""validate_data killed (SIGKILL: no cleanup runs) at points inside its work: what it leaves
never looks like a dataset, and the re-run converges to the same digests as a run that was
never interrupted. SIGTERM ends the process the same way (validate starts no children)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.settings import PROJECT_ROOT

pytestmark = [pytest.mark.faults, pytest.mark.integration]

_CHILD = """
import json, sys
from pathlib import Path
from data.config import DataConfig
from data.stage import validate_dataset
out = validate_dataset(DataConfig(), Path(sys.argv[1]))
print(json.dumps({"splits": out.split_digests, "tokenizer": out.tokenizer_digest}), flush=True)
"""


def _validate(output_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(output_dir)], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})


def _digests(process: subprocess.Popen[str]) -> dict[str, object]:
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0
    return dict(json.loads(out.strip().splitlines()[-1]))


def test_killed_validate_leaves_nothing_that_looks_valid_and_converges(tmp_path: Path) -> None:
    reference = _digests(_validate(tmp_path / "reference" / "dataset"))
    for delay in (1.0, 4.0, 7.0):
        root = tmp_path / f"killed-{delay}"
        output_dir = root / "dataset"
        process = _validate(output_dir)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        if output_dir.exists():  # killed after the atomic publish: it must be complete
            assert {p.name for p in output_dir.iterdir()} >= {"train.jsonl", "validation.jsonl",
                                                            "eval.jsonl"}
        leftovers = [p.name for p in root.iterdir() if p.name != "dataset"] \
            if root.exists() else []
        assert all(".staging-" in name for name in leftovers), leftovers  # named as partial
        assert _digests(_validate(output_dir)) == reference, f"killed at {delay} s"
