"""``python -m jepsen_like COMMAND ...``: the harness's command line.

Each subcommand lives in its own module and registers itself through an
``add_<name>_parser(subparsers)`` function that sets ``func`` (a function of
the parsed arguments returning the exit status) with ``set_defaults``.
"""

from __future__ import annotations

import argparse
import sys

from jepsen_like.cli import add_check_parser
from jepsen_like.harness.cli import add_run_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jepsen_like",
        description="Jepsen-style testing of raftmem: run workloads, check histories.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run_parser(subparsers)  # the fault-injection harness: jepsen_like/harness/cli.py
    add_check_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
