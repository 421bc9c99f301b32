"""Render every `shipyard` subcommand's --help into docs/cli.md (between two markers).

    .venv/bin/python -m cli.docs          rewrite the generated part of docs/cli.md
    .venv/bin/python -m cli.docs --check  exit 1 if it is stale (tests/cli/test_commands.py)

Defaults that depend on the machine (SHIPYARD_HOME, MLFLOW_TRACKING_URI) are rendered with the
documented defaults, so the page is the same everywhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.main import build_parser
from common.settings import PROJECT_ROOT

CLI_PAGE = PROJECT_ROOT / "docs" / "cli.md"
BEGIN = "<!-- BEGIN GENERATED: python -m cli.docs -->"
END = "<!-- END GENERATED -->"


def reference() -> str:
    parser = build_parser(Path("~/.shipyard"), environ={})
    parts = ["## Reference", "", "### `shipyard`", "", "```text", parser.format_help().rstrip(),
             "```"]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        parts += ["", f"### `shipyard {name}`", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(parts) + "\n"


def render(page: str) -> str:
    """`page` with the text between the markers replaced by the current reference."""
    if BEGIN not in page or END not in page:
        raise ValueError(f"{CLI_PAGE} lacks the markers {BEGIN!r} / {END!r}")
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{reference()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    current = CLI_PAGE.read_text()
    fresh = render(current)
    if "--check" in args:
        if fresh != current:
            print(f"{CLI_PAGE} is stale: run .venv/bin/python -m cli.docs", file=sys.stderr)
            return 1
        return 0
    CLI_PAGE.write_text(fresh)
    print(f"wrote {CLI_PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
