"""`shipyard` behaves like a Unix tool: a closed pipe ends it quietly, `--json` answers a
failure with a JSON error object on stdout (scripts parse stdout, people read stderr), a
progress bar is drawn only on a terminal, and the tasks ask the cluster for their credentials
as Flyte secrets."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import EXIT_BROKEN_PIPE, main
from common.progress import StepProgress
from common.settings import PROJECT_ROOT, load_settings
from tests.conftest import subprocess_env

pytestmark = pytest.mark.unit


def stdout_json(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    value = json.loads(capsys.readouterr().out)
    assert isinstance(value, dict)
    return value


def test_a_closed_pipe_ends_the_command_quietly(isolated_home: Path) -> None:
    """`shipyard reports | head -0`: the reader is gone before the first write."""
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "reports", "--json"],
                               cwd=PROJECT_ROOT, env=subprocess_env(isolated_home),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the interpreter has even started
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


@pytest.mark.parametrize(("argv", "code", "exit_code"), [
    (["status", "nowhere"], "DEPLOY_NOT_FOUND", 1),
    (["promote"], "DEPLOY_NOT_FOUND", 1),  # a StageError: no deployments at all
    (["history", "nowhere"], "NOT_FOUND", 1),  # nothing to show
    (["reports", "no-such-run"], "NOT_FOUND", 1),
])
def test_json_failures_are_a_json_error_object_on_stdout(
        argv: list[str], code: str, exit_code: int, isolated_home: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--json"]) == exit_code
    error = stdout_json(capsys)["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert error["message"]


def test_a_usage_error_with_json_is_a_json_error_object(
        isolated_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("a", "b"):
        (load_settings().home / "deployments" / name / "records").mkdir(parents=True)
    assert main(["history", "--json"]) == 2  # several deployments, none named
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert error["code"] == "USAGE"
    assert "several deployments" in error["message"]
    assert "several deployments" in captured.err


@pytest.mark.integration  # imports MLflow and model-signing (seconds)
def test_verify_json_prints_the_failed_check(isolated_home: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "not-a-model-uri", "--json"]) == 2
    report = stdout_json(capsys)
    assert report["model_uri"] == "not-a-model-uri"
    assert report["error"]["code"] == "MODEL_URI_INVALID"  # type: ignore[index]


def test_progress_in_a_log_file_is_a_line_every_tenth_of_the_run() -> None:
    log = io.StringIO()
    progress = StepProgress("train", 200, stream=log)
    for done in range(1, 201):
        progress.update(done, loss=f"{1 / done:.4f}")
    progress.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == 10
    assert lines[0].startswith("[shipyard] train step 20/200 loss 0.0500")
    assert lines[-1].startswith("[shipyard] train step 200/200 loss 0.0050")


def test_progress_resumed_mid_run_and_other_ranks() -> None:
    log = io.StringIO()
    progress = StepProgress("train", 10, initial=7, stream=log, every_steps=5)
    for done in range(8, 11):
        progress.update(done)
    assert log.getvalue().splitlines()[0].startswith("[shipyard] train step 10/10")
    quiet = io.StringIO()
    other_rank = StepProgress("train", 10, stream=quiet, enabled=False)
    for done in range(1, 11):
        other_rank.update(done)
    assert quiet.getvalue() == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_a_live_bar() -> None:
    terminal = _Terminal()
    progress = StepProgress("train", 50, stream=terminal)
    for done in range(1, 51):
        progress.update(done, loss="1.0")
    progress.close()
    assert "\r" in terminal.getvalue()
    assert "[shipyard] train step" not in terminal.getvalue()


def test_tasks_request_the_judge_key_and_mlflow_credentials_as_flyte_secrets() -> None:
    # Every task that talks to MLflow mounts its credentials; the others mount nothing (least
    # privilege: a data validation pod has no registry password to leak).
    from eval.config import EvalConfig
    from tasks.base_model import provision_base
    from tasks.deploy_canary import deploy_canary
    from tasks.evaluate import champion_reference, evaluate
    from tasks.import_base import import_base_champion
    from tasks.register import register
    from tasks.resolve import resolve_config
    from tasks.train import train, train_1_gpu, train_2_nodes_8_gpus, train_8_gpus
    from tasks.validate import validate_data

    def mounted(task: object) -> set[str]:
        secrets = task.security_context.secrets if task.security_context else []  # type: ignore[attr-defined]
        return {s.env_var for s in secrets if s.group == "shipyard"}

    mlflow = {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"}
    assert mounted(evaluate) == {EvalConfig().judge.api_key_env} | mlflow
    for uses_mlflow in (champion_reference, register, import_base_champion, deploy_canary,
                        train, train_1_gpu, train_8_gpus, train_2_nodes_8_gpus):
        assert mounted(uses_mlflow) == mlflow, uses_mlflow.name
    for no_mlflow in (resolve_config, validate_data, provision_base):
        assert mounted(no_mlflow) == set(), no_mlflow.name
