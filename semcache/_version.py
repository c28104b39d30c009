"""The installed version, read from the distribution's metadata (pyproject.toml is the source)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["VERSION"]

try:
    VERSION: str = version("semcache-middleware")
except PackageNotFoundError:  # a source tree that was never installed
    VERSION = "0+unknown"
