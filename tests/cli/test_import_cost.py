"""`shipyard --help` stays fast: the CLI's modules import no heavy stack at import time.

Importing MLflow, torch or flytekit costs seconds on 2 cores (`shipyard --help` took 5.7 s
before the imports moved into the commands, 0.2 s after: docs/benchmarks.md). A fresh
interpreter is the only honest place to look, since the test process has imported them all.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from common.settings import PROJECT_ROOT

HEAVY = ("mlflow", "torch", "flytekit", "transformers", "lm_eval", "vllm", "model_signing",
         "pandas", "scipy")

# Imports the CLI, prints every command's --help, then reports which heavy packages got
# imported.
PROBE = f"""
import contextlib, io, json, sys
import cli.main
loaded_on_import = sorted(m for m in {HEAVY!r} if m in sys.modules)
commands = [[], ["status"], ["promote"], ["abort"], ["pause"], ["resume"], ["undo"],
            ["history"], ["serve"], ["stop"], ["reports"], ["gc"], ["run"], ["verify"]]
codes = []
for words in commands:
    with contextlib.redirect_stdout(io.StringIO()):
        codes.append(cli.main.main([*words, "--help"]))
print(json.dumps({{"on_import": loaded_on_import, "codes": codes,
                   "after_help": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


@pytest.mark.integration
def test_cli_import_and_help_load_no_heavy_package() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["on_import"] == [], f"`import cli.main` imported {seen['on_import']}"
    assert seen["codes"] == [0] * 14, "every --help exits 0"
    assert seen["after_help"] == [], f"`shipyard CMD --help` imported {seen['after_help']}"


@pytest.mark.integration
def test_the_workflow_module_loads_no_stage_stack() -> None:
    """Every `pyflyte run` and every cached re-run imports workflows/pipeline.py before any
    task runs: the stage stacks load inside the tasks (17 s -> 9 s of start-up on 2 cores).
    torch stays: the PyTorch plugin's Elastic task imports it when the train task is built."""
    probe = ("import json, sys, workflows.pipeline; print(json.dumps(sorted(m for m in "
             f"{HEAVY!r} + ('great_expectations', 'deploy.stage', 'registry.stage') "
             "if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=180, check=True)
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    stage_stacks = {"mlflow", "transformers", "lm_eval", "vllm", "scipy", "great_expectations",
                    "deploy.stage", "registry.stage"}
    assert not loaded & stage_stacks, sorted(loaded & stage_stacks)
    assert {"flytekit", "torch"} <= loaded  # the probe saw the imports it is meant to see


@pytest.mark.unit
def test_the_cli_names_the_public_key_file_the_signer_writes() -> None:
    from registry import cli, signing

    assert cli.PUBLIC_KEY_NAME == signing.PUBLIC_KEY_NAME
