"""Retrieval built on the cache's prompt-tuned embedder warns: that adapter ranks passages worse."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from semcache.embedders.shipped import EMBEDDER
from semcache.retrieval import EmbeddedRetrievalStore, HybridRetriever, Indexer
from semcache.testing import HashingEmbedder


class _TunedHashing(HashingEmbedder):
    """A hashing embedder whose fingerprint names the shipped matcher adapter."""

    def __init__(self) -> None:
        super().__init__(32)
        self._fingerprint = replace(self._fingerprint, variant=f"lora-{EMBEDDER.sha256[:12]}")


def test_retrieval_on_the_prompt_tuned_embedder_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The shipped adapter ranks passages worse (BENCHMARKS): building an index or a retriever
    with it logs a warning naming the fix; the plain model does not."""
    with EmbeddedRetrievalStore(None) as store, caplog.at_level(logging.WARNING, "semcache"):
        Indexer(store, HashingEmbedder(32))
        HybridRetriever(store, HashingEmbedder(32))
        assert not caplog.records
    with EmbeddedRetrievalStore(None) as store, caplog.at_level(logging.WARNING, "semcache"):
        Indexer(store, _TunedHashing())
        HybridRetriever(store, _TunedHashing())
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert all("tuned=False" in m for m in messages)
    assert "the Indexer" in messages[0]
    assert "the HybridRetriever" in messages[1]
