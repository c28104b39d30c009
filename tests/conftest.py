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
from redis_server import redis_url  # noqa: F401  (session fixture)

from semcache import ManualClock, SentenceTransformerEmbedder
from semcache.testing import HashingEmbedder

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


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


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"evaluation data not found at {SHARED_DATA} (shared/ must sit beside the repo)"
        )
    return SHARED_DATA


@pytest.fixture
def tmp_cache_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "cache"
    return path
