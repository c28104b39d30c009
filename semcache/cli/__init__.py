"""The ``semcache`` command. Each subcommand lives in ``semcache/cli/<name>.py``.

A command module defines ``register(subparsers)``, which adds its parser (or, for
``operate``, the six operator commands) and sets ``func(args) -> int`` as the parser default.
Modules are imported only when the CLI runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# Order is the order shown in --help.
COMMANDS = ("demo", "calibrate", "eval", "tune", "operate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semcache", description="Semantic cache and retrieval middleware for LLM apps."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"semcache.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
