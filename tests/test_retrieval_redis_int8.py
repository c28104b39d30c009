"""Int8 rescoring on the Redis retrieval store: one round trip, same scores (real Redis Stack).

The number of commands is read from the server's ``INFO commandstats`` (a count, not a timing):
rescoring must issue one ``FT.SEARCH`` and no ``HGET``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from semcache.errors import ConfigurationError
from semcache.retrieval import (
    ChunkingConfig,
    Document,
    Float32Search,
    Indexer,
    Int8Rescored,
    RecursiveSplitter,
)
from semcache.retrieval.quantization import Int8Quantizer
from semcache.retrieval.redis_store import RedisRetrievalStore
from semcache.testing import HashingEmbedder

pytestmark = pytest.mark.redis

DOCS = [
    Document(id=f"d{i}", text=f"Document {i} is about topic {i % 5} and also about {w}.")
    for i, w in enumerate(["cats", "dogs", "rust", "tea", "rivers", "maps", "trains", "bread"])
]


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def client(redis_url: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    import redis

    c = redis.Redis.from_url(redis_url, protocol=request.param)
    yield c
    c.close()


@pytest.fixture(params=["FLOAT32", "FLOAT16"])
def store(client: Any, request: pytest.FixtureRequest) -> Iterator[RedisRetrievalStore]:
    s = RedisRetrievalStore(
        client, name=f"i{uuid.uuid4().hex[:10]}", vector_type=request.param, max_oversample=4.0
    )
    Indexer(s, HashingEmbedder(), RecursiveSplitter(ChunkingConfig(max_tokens=64))).upsert(DOCS)
    yield s
    s.drop()


def _calls(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.lower(): int(v["calls"]) for k, v in stats.items()}


def _expected(store: RedisRetrievalStore, query: np.ndarray, k: int) -> list[tuple[str, float]]:
    """Every stored code, fetched one by one and scored: what rescoring must return."""
    quantizer = Int8Quantizer.from_dict(json.loads(store.client.hget(store._meta, "int8")))
    ids = [f"{d.id}#0" for d in DOCS]
    raw = [store.client.hget(store._prefix + cid, "i8") for cid in ids]
    codes = np.frombuffer(b"".join(raw), dtype=np.int8).reshape(len(ids), -1)
    scores = quantizer.scores(query, codes)
    order = np.lexsort((np.arange(len(ids)), -scores))[:k]
    return [(ids[i], float(scores[i])) for i in order]


def test_rescoring_is_one_search_with_the_codes_and_no_hget(
    store: RedisRetrievalStore, client: Any
) -> None:
    query = HashingEmbedder().embed(["topic 3 and also about tea"])[0]
    expected = _expected(store, query, 2)  # 2 x 4 oversampling = all 8 documents are candidates
    before = _calls(client)
    hits = store.dense(query, 2, Int8Rescored())
    after = _calls(client)
    assert [c for c, _ in hits] == [c for c, _ in expected]
    assert [s for _, s in hits] == pytest.approx([s for _, s in expected], abs=1e-6)
    assert after.get("cmdstat_ft.search", 0) - before.get("cmdstat_ft.search", 0) == 1
    assert after.get("cmdstat_hget", 0) == before.get("cmdstat_hget", 0)
    assert after.get("cmdstat_hmget", 0) == before.get("cmdstat_hmget", 0)


def test_a_candidate_without_a_code_is_left_out(store: RedisRetrievalStore) -> None:
    query = HashingEmbedder().embed(["topic 3 and also about tea"])[0]
    top = store.dense(query, 1, Int8Rescored())[0][0]
    store.client.hdel(store._prefix + top, "i8")  # e.g. written by a partial, older writer
    hits = store.dense(query, 8, Int8Rescored())
    assert top not in [c for c, _ in hits]
    assert len(hits) == len(DOCS) - 1


def test_max_oversample_caps_the_candidates(redis_url: str) -> None:
    capped = RedisRetrievalStore.from_url(redis_url, name=f"c{uuid.uuid4().hex[:10]}")
    wide = RedisRetrievalStore.from_url(redis_url, name=capped.name, max_oversample=4.0)
    try:
        splitter = RecursiveSplitter(ChunkingConfig(max_tokens=64))
        Indexer(capped, HashingEmbedder(), splitter).upsert(DOCS)
        wide.bind(HashingEmbedder().fingerprint)
        query = HashingEmbedder().embed(["topic 3 and also about tea"])[0]
        top2 = [c for c, _ in capped.dense(query, 2, Float32Search())]
        for cid in top2:  # only the first stage's top 2 lose their codes
            capped.client.hdel(capped._prefix + cid, "i8")
        # Capped at 1x, the 2 candidates are exactly those two: nothing left to rescore.
        assert capped.dense(query, 2, Int8Rescored()) == []
        # At 4x, 8 candidates: two others are returned.
        assert {c for c, _ in wide.dense(query, 2, Int8Rescored())}.isdisjoint(top2)
        assert len(wide.dense(query, 2, Int8Rescored())) == 2
    finally:
        capped.drop()
        capped.close()
        wide.close()


@pytest.mark.parametrize("bad", [0.5, float("nan"), 1e9])
def test_max_oversample_is_checked(redis_url: str, bad: float) -> None:
    with pytest.raises(ConfigurationError, match="max_oversample"):
        RedisRetrievalStore.from_url(redis_url, name="x", max_oversample=bad)
