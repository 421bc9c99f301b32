"""Quiet console (#11 §3): third-party warnings, logs and progress bars go to the run's
pipeline.log; the console keeps Shipyard's own lines. Run in a child process, as a task edge
would, so this test's logging setup is not the one checked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from common.settings import PROJECT_ROOT

pytestmark = pytest.mark.unit

SCRIPT = textwrap.dedent("""
    import logging, sys, warnings
    from pathlib import Path
    class WrappedStderr:                                    # as MLflow's MlflowLoggingStream
        def write(self, text): sys.stderr.write(text)
        def flush(self): sys.stderr.flush()
    noisy = logging.getLogger("mlflow.tracking")            # a library with its own handler
    noisy.addHandler(logging.StreamHandler(WrappedStderr())); noisy.propagate = False
    from common.logging_setup import setup_quiet_console
    log = setup_quiet_console(Path(sys.argv[1]))
    setup_quiet_console(Path(sys.argv[1]))                  # idempotent: no second handler
    warnings.warn("third-party deprecation chatter", UserWarning)
    noisy.warning("mlflow advisory line")
    logging.getLogger("transformers.modeling_utils").warning("weights not initialized")
    logging.getLogger("great_expectations").info("gx progress")
    logging.getLogger("urllib3").error("connection refused by the judge")
    logging.getLogger("registry.stage").warning("our own warning")
    logging.getLogger("registry.stage").info("our own detail")
    from tqdm import tqdm
    for _ in tqdm(range(3), desc="lm-eval requests"):
        pass
    for _ in tqdm(range(3), desc="explicitly enabled bar", disable=False):   # lm-eval does so
        pass
    exec("from tqdm import tqdm\\nfor _ in tqdm(range(2), desc='our training bar', "
         "disable=False): pass", {"__name__": "training.loop"})   # Shipyard's own bar stays
    import mlflow                                           # imported after the set-up,
    logging.getLogger("mlflow.store.db.utils").info("mlflow creating tables")  # as stages do
    print("[shipyard] validate_data report: /x/validate_data.html", flush=True)
""")


def test_third_party_noise_goes_to_the_log_and_ours_stays_on_the_console(
    tmp_path: Path,
) -> None:
    log = tmp_path / "reports" / "run" / "pipeline.log"
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120, check=True)
    # (the training bar redraws with \r: its lines and the empty ones between them aside)
    console = sorted(line for line in (result.stdout + result.stderr).splitlines()
                     if line.strip() and "our training bar" not in line)
    assert console == [
        "[shipyard] ERROR urllib3: connection refused by the judge",  # errors are never hidden
        "[shipyard] WARNING registry.stage: our own warning",
        "[shipyard] validate_data report: /x/validate_data.html",
    ], console
    logged = log.read_text()
    for line in ("third-party deprecation chatter", "mlflow advisory line",
                 "weights not initialized", "gx progress", "our own warning", "our own detail",
                 "mlflow creating tables"):
        assert logged.count(line) == 1, (line, logged)
    assert "lm-eval requests" not in result.stderr  # the progress bar is off
    assert "explicitly enabled bar" not in result.stderr  # even when a library asks for it
    assert "our training bar" in result.stderr


LATE_IMPORT = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    from common.logging_setup import setup_quiet_console
    setup_quiet_console(Path(sys.argv[1]))
    setup_quiet_console(Path(sys.argv[1]))         # a second task: still one hook, one set-up
    print("imported by the set-up:", "transformers" in sys.modules, flush=True)
    from transformers.utils import logging as hf_logging      # a stage imports it later
    hf_logging.get_logger("transformers.generation").warning("late library warning")
    print("progress bars:", hf_logging.is_progress_bar_enabled(), flush=True)
""")


def test_a_library_imported_after_the_set_up_is_quieted_too(tmp_path: Path) -> None:
    """The set-up does not import transformers (a second of every task that never uses it),
    yet when a stage imports it afterwards its warnings go to the log and its bars stay off."""
    log = tmp_path / "pipeline.log"
    result = subprocess.run([sys.executable, "-c", LATE_IMPORT, str(log)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.splitlines() == ["imported by the set-up: False",
                                          "progress bars: False"], result.stdout
    assert "late library warning" not in result.stderr, result.stderr
    assert log.read_text().count("late library warning") == 1
