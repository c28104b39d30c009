"""Shared fixtures. The real model is loaded once per session; torch is pinned to one thread.

Fixture modules of each area are imported below so pytest registers their fixtures.
"""

from __future__ import annotations

import os

# Before torch is imported anywhere: one thread (2-core machines thrash otherwise), and never
# a hub lookup (it retries for about a minute offline).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from collections.abc import Iterator
from pathlib import Path

import pytest
from otel_capture import otel  # noqa: F401  (fixture)
from redis_server import redis_url  # noqa: F401  (session fixture)

from semcache import SentenceTransformerEmbedder
from semcache.testing import HashingEmbedder, ManualClock

TEST_DATA = Path(__file__).resolve().parent / "data"  # small samples; see data/README.md


@pytest.fixture(scope="session")
def st_embedder() -> SentenceTransformerEmbedder:
    """The packaged all-MiniLM-L6-v2, loaded once (torch pinned to one thread)."""
    import torch

    torch.set_num_threads(1)
    return SentenceTransformerEmbedder()


@pytest.fixture
def hashing_embedder() -> HashingEmbedder:
    return HashingEmbedder()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def test_data() -> Path:
    """tests/data: small samples of the evaluation data sets, kept in the repository."""
    if not TEST_DATA.is_dir():
        pytest.fail(f"test fixtures not found at {TEST_DATA}")
    return TEST_DATA


@pytest.fixture
def tmp_cache_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "cache"
    return path
