"""`shipyard`: one command line for a model's way to production traffic.

    shipyard status [NAME] [--watch] [--timeout S]    where a deployment stands
    shipyard promote|abort|pause|resume [NAME]         act on a canary while it bakes
    shipyard undo [NAME] [--to-version N]              serve the previous champion again
    shipyard history [NAME]                            champion changes and their decisions
    shipyard verify models:/NAME@ALIAS                 check a registered model
    shipyard serve models:/NAME/V                      verify, then serve as the stable
    shipyard stop [NAME]                               stop a local deployment's servers
    shipyard reports [RUN] | gc [--dry-run] | run      reports, clean-up, the pipeline

Exit codes: 0 ok; 1 degraded, failed, refused or not found; 2 bad usage; 3 timed out;
141 the reader of stdout went away (`shipyard history | head`: quietly, like any Unix tool).
Every command takes --json for scripts; with it a failure is also a JSON object on stdout,
{"error": {"code": ..., "message": ...}}. docs/cli.md is generated from this parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TypeAlias

# Only light modules here: `shipyard --help` must not import MLflow, torch or flytekit
# (tests/cli/test_import_cost.py). The deploy stack and `registry.cli` (MLflow, model-signing)
# are imported inside the commands that use them.
from cli import housekeeping, rollout, status
from cli.common import FAILED, USAGE, USAGE_ERROR, UsageError, error, print_json_error
from common.errors import StageError
from common.settings import load_settings

HELP_WIDTH = 92  # fixed, so docs/cli.md does not depend on the terminal


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=HELP_WIDTH)


def _raw_formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, width=HELP_WIDTH)


def build_parser(home: Path, environ: Mapping[str, str], *,
                 verify_arguments: bool = True) -> argparse.ArgumentParser:
    """The whole command line. `home` and `environ` only fill in defaults shown by --help.

    `verify_arguments=False` leaves out `verify`'s own arguments, whose definition lives in
    `registry.cli` (importing it loads MLflow and model-signing: seconds); `main` asks for them
    only when the command is `verify`.
    """
    parser = argparse.ArgumentParser(
        prog="shipyard", formatter_class=_formatter,
        description="One command line for a Shipyard model's way to production traffic.",
        epilog="exit codes: 0 ok; 1 degraded, failed, refused or not found; 2 bad usage; "
               "3 timed out (status --timeout)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_status(commands)
    _add_rollout_controls(commands)
    _add_undo_and_history(commands)
    _add_verify(commands, home, environ, with_arguments=verify_arguments)
    _add_serve_and_stop(commands)
    _add_housekeeping(commands)
    return parser


# What add_subparsers returns (argparse gives it no public name).
_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _command(commands: _Commands, name: str, help_text: str, description: str,
             raw: bool = False) -> argparse.ArgumentParser:
    """One subcommand; each takes --json."""
    sub = commands.add_parser(name, help=help_text, description=description,
                              formatter_class=_raw_formatter if raw else _formatter)
    sub.add_argument("--json", action="store_true", help="print JSON for scripts")
    return sub


def _name_argument(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", nargs="?", metavar="NAME",
                     help="deployment name (default: the only deployment there is)")


def _add_status(commands: _Commands) -> None:
    sub = _command(commands, "status", "where a deployment stands (phase, step, weights, verdict)",
                   status.__doc__ or "", raw=True)
    _name_argument(sub)
    sub.add_argument("--watch", action="store_true",
                     help="keep printing until Healthy (exit 0) or Degraded (exit 1)")
    sub.add_argument("--timeout", type=float, metavar="SECONDS", default=None,
                     help="with --watch (implied): exit 3 if still Progressing/Paused then")
    sub.add_argument("--interval", type=float, metavar="SECONDS", default=2.0,
                     help="seconds between looks while watching (default: %(default)s)")


_CONTROLS = {
    "promote": "end the current canary step as PASS and go to the next one "
               "(--full: straight to 100 % and PASS: promoted, champion moves)",
    "abort": "end the rollout as FAIL: the canary is rolled back, the champion stays",
    "pause": "hold the current canary weight; the bake clock stops until resume "
             "(an absolute SLO breach still fails the canary)",
    "resume": "continue a paused canary",
}


def _add_rollout_controls(commands: _Commands) -> None:
    for name, text in _CONTROLS.items():
        sub = _command(commands, name, text.split(" (")[0].split(":")[0],
                       f"{text[0].upper()}{text[1:]}. Written as a control file in the "
                       "deployment directory (0600, with who and when); the running deploy "
                       "obeys it within one scrape interval and records it in the decision "
                       "record. Exit 1 if no canary is baking.")
        _name_argument(sub)
        if name == "promote":
            sub.add_argument("--full", action="store_true",
                             help="skip the remaining steps: 100 %% and PASS")


def _add_undo_and_history(commands: _Commands) -> None:
    sub = _command(commands, "undo", "serve the previous champion again (verified first)",
                   "Serve the version the champion alias held before it last moved (from the "
                   "signed deployment history, never the unsigned decision records), or "
                   "--to-version N (a former champion), as the stable: verify it as the "
                   "digest the history recorded, start it behind the router, smoke-check it, "
                   "move the champion alias, write a decision record.")
    _name_argument(sub)
    sub.add_argument("--to-version", type=int, metavar="N", default=None,
                     help="the registered version to go back to")
    _serving_options(sub)
    sub = _command(commands, "history", "champion changes over time, with their decision records",
                   "Every deploy of the deployment, oldest first: model, action, outcome, "
                   "champion before -> after, who acted on the canary, the decision record.")
    _name_argument(sub)


def _add_verify(commands: _Commands, home: Path, environ: Mapping[str, str], *,
                with_arguments: bool) -> None:
    # --json is one of verify's own arguments (registry.cli), which `shipyard --help` skips.
    verify = commands.add_parser(
        "verify", help="verify a registered model's signature, provenance and policy",
        description="Download a model version, recompute its digest, check its signature "
        "and SLSA provenance, and apply the policy. Fail-closed. Exit 1 when a check fails.",
        formatter_class=_formatter)
    if with_arguments:
        from registry import cli as registry_cli

        registry_cli.add_verify_arguments(verify, home=home, environ=environ)


def _add_serve_and_stop(commands: _Commands) -> None:
    sub = _command(commands, "serve", "verify a version, then serve it as the stable (no canary)",
                   "Verify models:/NAME/VERSION and serve it as the stable with no canary: a "
                   "first deployment, or a replacement of the running stable (which drains, "
                   "then stops). The champion alias moves to it. Prints the endpoint.")
    sub.add_argument("model_uri", metavar="MODEL_URI", help="models:/NAME/VERSION")
    sub.add_argument("--name", default=None,
                     help="deployment name (default: the registered model name)")
    sub.add_argument("--engine", choices=("local", "vllm", "auto"), default="auto",
                     help="serving engine (default: %(default)s: vLLM when it can serve the "
                          "model here, else the local engine)")
    _serving_options(sub)
    sub = _command(commands, "stop", "stop a local deployment's servers (router first)",
                   "Stop the router, canary and stable a local deployment left running "
                   "(all deployments without NAME). Exit 1 if a named one had nothing running.")
    sub.add_argument("name", nargs="?", metavar="NAME", help="deployment name (default: all)")


def _add_housekeeping(commands: _Commands) -> None:
    sub = _command(commands, "reports",
                   "list pipeline runs' report directories, or one run's files",
                   "Without RUN: <SHIPYARD_HOME>/reports/<run-id>/ directories, newest first. "
                   "With RUN: the paths of that run's report files.")
    sub.add_argument("run", nargs="?", metavar="RUN", help="a run id from the listing")
    sub = _command(commands, "gc", "remove unused model copies and stale temp dirs",
                   "Remove model copies under deployments/<name>/models that no running "
                   "stable or canary uses (skipping a deployment a deploy is working on), and "
                   "shipyard-eval-* / shipyard-champion-* temp dirs older than a day. Prints "
                   "what was freed.")
    sub.add_argument("--dry-run", action="store_true", help="print what would go; remove nothing")
    sub.add_argument("--temp-dir", default=None, metavar="DIR",
                     help="where to look for stale temp dirs (default: the system temp dir)")
    _add_run(commands)


def _add_run(commands: _Commands) -> None:
    sub = _command(commands, "run", "run the pipeline with pyflyte, condensed console + full log",
                   "Run `pyflyte run [--remote] workflows/pipeline.py shipyard_pipeline --preset "
                   "P --overrides '[...]'`. The console shows pyflyte's lines that name an "
                   "execution, an error or a [shipyard] report (one per finished stage); the "
                   "full output goes to <SHIPYARD_HOME>/logs/run-<time>.log, whose path is "
                   "printed. Exit 1 when pyflyte fails.")
    sub.add_argument("--preset", default="tiny", help="preset name or YAML path "
                     "(default: %(default)s)")
    sub.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                     help="override one config value (repeatable), e.g. train.max_steps=20")
    sub.add_argument("--remote", action="store_true", help="run on the configured Flyte cluster")
    sub.add_argument("--verbose", action="store_true", help="print every line, not a summary")


def _serving_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--ready-timeout", type=float, default=300.0, metavar="SECONDS",
                     help="how long an engine may take to become ready (default: %(default)s)")


def _command_word(args_list: list[str]) -> str | None:
    """The subcommand typed: the first word that is not an option (the top-level parser has
    no option that takes a value)."""
    return next((word for word in args_list if not word.startswith("-")), None)


def _run_verify(args: argparse.Namespace) -> int:
    from registry import cli as registry_cli

    return registry_cli.run_verify(args)


# 128 + SIGPIPE: what a shell reports for a tool that a closed pipe stopped
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        # `shipyard ... | head`: the reader has gone. Point stdout at /dev/null so the
        # interpreter's own flush at exit cannot raise (and print) the same error again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _main(args_list: list[str]) -> int:
    settings = load_settings()
    parser = build_parser(settings.home, os.environ,
                          verify_arguments=_command_word(args_list) == "verify")
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse: 0 after --help, 2 for bad usage
        return int(exc.code or 0)
    handlers: dict[str, Callable[[], int]] = {
        "status": partial(status.run_status, args, settings.home),
        "promote": partial(rollout.run_control, args, settings.home),
        "abort": partial(rollout.run_control, args, settings.home),
        "pause": partial(rollout.run_control, args, settings.home),
        "resume": partial(rollout.run_control, args, settings.home),
        "undo": partial(rollout.run_undo, args, settings),
        "history": partial(rollout.run_history, args, settings.home),
        "verify": partial(_run_verify, args),
        "serve": partial(rollout.run_serve, args, settings),
        "stop": partial(rollout.run_stop, args, settings.home),
        "reports": partial(housekeeping.run_reports, args, settings),
        "gc": partial(housekeeping.run_gc, args, settings),
        "run": partial(housekeeping.run_pipeline, args, settings),
    }
    try:
        return handlers[args.command]()
    except UsageError as exc:
        _report(args, USAGE_ERROR, str(exc))
        return USAGE
    except StageError as exc:
        _report(args, exc.code, exc.message)
        return FAILED
    except KeyboardInterrupt:
        return 130


def _report(args: argparse.Namespace, code: str, message: str) -> None:
    """stderr for people, and with --json the same error as a JSON object on stdout."""
    error(args.command, message if code == USAGE_ERROR else f"[{code}] {message}")
    if getattr(args, "json", False):
        print_json_error(code, message)


if __name__ == "__main__":
    raise SystemExit(main())
