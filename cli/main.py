"""`shipyard` command line: one entry point, one subcommand per concern.

    shipyard verify models:/NAME@ALIAS [--policy FILE] ...   (registry.cli)
"""

from __future__ import annotations

import sys

from registry import cli as registry_cli

USAGE = "usage: shipyard verify models:/NAME@ALIAS [options]   (shipyard verify --help)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["verify"]:
        return registry_cli.main(args)
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
