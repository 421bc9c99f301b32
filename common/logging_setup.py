"""A quiet console: third-party warnings, logs and progress bars go to a log file; the console
keeps Shipyard's own lines (our loggers at WARNING and above, the ``[shipyard]`` prints) and
anyone's errors. Both handlers redact credentials inside URIs (`common.redact`) from every
record, ours and third-party ones alike.

Called at the task edges (`tasks.flyte_adapter.quiet_console`), never at import time. Safe to
call again: the second call with the same file changes nothing, a call with another file moves
the file handler there.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

from common.redact import RedactingFilter
from common.settings import SHIPPED_PACKAGES

# Top-level packages of this project: their loggers are "ours" (logging.getLogger(__name__)).
OUR_PACKAGES = (*SHIPPED_PACKAGES, "bench")

# Libraries known to attach their own console handler (and often propagate=False): their
# records are sent up to the root logger, where the file handler is.
THIRD_PARTY_LOGGERS = ("mlflow", "flytekit", "lm-eval", "lm_eval", "transformers", "datasets",
                       "great_expectations", "huggingface_hub", "torch", "urllib3", "httpx",
                       "alembic", "sqlalchemy", "py.warnings", "evaluate", "accelerate", "vllm")

# Environment for the processes started from here on (torch-elastic workers, engines):
# no progress bars (tqdm, Hugging Face, MLflow artifact downloads).
QUIET_ENV = {
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow adds its own stderr handler when it is first imported, which may be after this
    # ran (the stages import it lazily): without it its records propagate to our handlers
    "MLFLOW_CONFIGURE_LOGGING": "false",
}

_FILE_HANDLER_NAME = "shipyard-pipeline-log"
_CONSOLE_HANDLER_NAME = "shipyard-console"


def is_ours(logger_name: str) -> bool:
    return logger_name.partition(".")[0] in OUR_PACKAGES


class _ConsoleFilter(logging.Filter):
    """Our records at WARNING+, anyone's at ERROR+."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        return record.levelno >= logging.WARNING and is_ours(record.name)


def setup_quiet_console(log_file: Path) -> Path:
    """Route warnings and third-party logs to `log_file` (appended; INFO and above), keep ours on
    stderr, and turn third-party progress bars off. Returns `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    _install_file_handler(root, log_file)
    if not any(h.get_name() == _CONSOLE_HANDLER_NAME for h in root.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.set_name(_CONSOLE_HANDLER_NAME)
        console.addFilter(_ConsoleFilter())
        console.addFilter(RedactingFilter())
        console.setFormatter(logging.Formatter("[shipyard] %(levelname)s %(name)s: %(message)s"))
        root.addHandler(console)
    # Drop console handlers a library attached before (stderr/stdout StreamHandlers only).
    for stream_owner in (root, *_third_party_loggers()):
        for handler in list(stream_owner.handlers):
            if _is_foreign_console_handler(handler):
                stream_owner.removeHandler(handler)
        if stream_owner is not root:
            stream_owner.propagate = True
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    _quiet_libraries()
    return log_file


def _install_file_handler(root: logging.Logger, log_file: Path) -> None:
    for handler in list(root.handlers):
        if handler.get_name() == _FILE_HANDLER_NAME:
            if Path(getattr(handler, "baseFilename", "")) == log_file.resolve():
                return
            root.removeHandler(handler)
            handler.close()
    file_handler = logging.FileHandler(log_file, encoding="utf-8")
    file_handler.set_name(_FILE_HANDLER_NAME)
    file_handler.setLevel(logging.INFO)
    file_handler.addFilter(RedactingFilter())  # credentials in URIs never reach the file
    file_handler.setFormatter(logging.Formatter(
        "%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s"))
    root.addHandler(file_handler)


def _third_party_loggers() -> list[logging.Logger]:
    names = set(THIRD_PARTY_LOGGERS)
    names.update(n for n in logging.root.manager.loggerDict if not is_ours(n))
    loggers = [logging.getLogger(n) for n in sorted(names)]
    return [lg for lg in loggers if isinstance(lg, logging.Logger)]


def _is_foreign_console_handler(handler: logging.Handler) -> bool:
    if handler.get_name() in (_FILE_HANDLER_NAME, _CONSOLE_HANDLER_NAME):
        return False
    # Any stream but a file is a console here (MLflow wraps stderr in its own stream class).
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler)


def _quiet_libraries() -> None:
    """Library switches for what their loggers do not cover (progress bars, own handlers).
    Applied to transformers and datasets when they are imported, now or later: importing
    transformers only to quiet it cost about 1 s of every task that never uses it (a cached
    re-run uses it nowhere)."""
    _disable_tqdm_by_default()
    when_imported("transformers.utils.logging", _quiet_transformers)
    when_imported("datasets.utils.logging", _quiet_datasets)


def _quiet_transformers(hf_logging: ModuleType) -> None:
    hf_logging.disable_progress_bar()
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()


def _quiet_datasets(ds_logging: ModuleType) -> None:
    ds_logging.disable_progress_bar()
    ds_logging.get_logger().propagate = True


def when_imported(name: str, configure: Callable[[ModuleType], None]) -> None:
    """Call `configure(module)` now if module `name` is imported, else right after its first
    import (once). Several calls for one name before that import configure it once."""
    module = sys.modules.get(name)
    if module is not None:
        configure(module)
        return
    if not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, configure))


class _AfterImport(importlib.abc.MetaPathFinder):
    """One-shot import hook: lets the normal finders find `name`, then wraps its loader so that
    `configure` runs on the module once it has executed."""

    def __init__(self, name: str, configure: Callable[[ModuleType], None]) -> None:
        self.name, self.configure = name, configure

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # one shot; also keeps the search below from finding us
        spec = importlib.util.find_spec(fullname)
        loader = spec.loader if spec is not None else None
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        configure, real = self.configure, loader

        class _Configuring(importlib.abc.Loader):
            def create_module(self, spec: ModuleSpec) -> ModuleType | None:
                return real.create_module(spec)

            def exec_module(self, module: ModuleType) -> None:
                real.exec_module(module)
                configure(module)

            def __getattr__(self, attribute: str) -> Any:  # get_source, get_resource_reader...
                return getattr(real, attribute)

        spec.loader = _Configuring()
        return spec


def _disable_tqdm_by_default() -> None:
    """tqdm reads TQDM_DISABLE once, when it is first imported (usually before any task runs);
    disable every bar in this process too, even where a library passes `disable=` itself
    (lm-eval does). Only Shipyard's own bars (the training progress) decide for themselves."""
    try:
        from tqdm import std
    except ImportError:
        return
    init = std.tqdm.__init__
    if getattr(std.tqdm, "_shipyard_quiet", False):
        return

    def quiet_init(self: Any, *args: Any, **kwargs: Any) -> None:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if not is_ours(str(caller)):
            kwargs["disable"] = True
        init(self, *args, **kwargs)

    std.tqdm.__init__ = quiet_init
    std.tqdm._shipyard_quiet = True
