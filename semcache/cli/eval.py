"""``semcache eval``: measurement commands. Each target lives in ``eval_<name>.py``.

A target module defines ``register(subparsers)``, which adds its parser under ``eval`` and sets
``func(args) -> int``. Add the target's name to :data:`TARGETS` to list it.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

__all__ = ["TARGETS", "register"]

TARGETS = ("retrieval", "cache")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "eval", help="measure retrieval or cache quality on a dataset"
    )
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    for name in TARGETS:
        importlib.import_module(f"semcache.cli.eval_{name}").register(targets)
