"""The Redis retrieval store on a real Redis Stack server, and parity with the embedded store."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import RedisStackServer, free_port

from semcache import SentenceTransformerEmbedder
from semcache.backends.breaker import BreakerParams
from semcache.backends.redis import RedisConnection
from semcache.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    FingerprintMismatchError,
)
from semcache.retrieval import (
    BinaryRescored,
    ChunkingConfig,
    Document,
    EmbeddedRetrievalStore,
    EmbeddedStoreConfig,
    Float32Search,
    HybridRetriever,
    Indexer,
    Int8Rescored,
    RecursiveSplitter,
)
from semcache.retrieval.redis_store import RedisRetrievalStore
from semcache.testing import HashingEmbedder

pytestmark = pytest.mark.redis

DOCS = [
    Document(id="cats", title="Cats", text="Cats are small carnivorous mammals that purr."),
    Document(id="dogs", title="Dogs", text="Dogs are loyal animals that bark at strangers."),
    Document(id="rust", title="Rust", text="Rust is a systems programming language."),
]


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def redis_store(redis_url: str, request: pytest.FixtureRequest) -> Iterator[RedisRetrievalStore]:
    import redis

    client = redis.Redis.from_url(redis_url, protocol=request.param)
    store = RedisRetrievalStore(client, name=f"t{uuid.uuid4().hex[:10]}")
    yield store
    store.drop()
    store.close()
    client.close()  # a given client is the caller's to close


def test_capabilities_of_the_test_server(redis_store: RedisRetrievalStore) -> None:
    caps = redis_store.capabilities
    assert {"FLOAT32", "FLOAT16"} <= caps.vector_types
    assert caps.bm25_scorer in ("BM25STD", "BM25")
    if caps.search_version < 80000:  # Redis Stack 7.4 (search 2.10): no INT8 vectors
        assert not caps.int8_vectors


def test_replace_delete_and_search(redis_store: RedisRetrievalStore) -> None:
    emb = HashingEmbedder()
    indexer = Indexer(redis_store, emb, RecursiveSplitter(ChunkingConfig(max_tokens=64)))
    assert indexer.upsert(DOCS).added == ("cats", "dogs", "rust")
    assert redis_store.count() == 3
    assert redis_store.sparse("loyal dogs barking", 3)[0][0] == "dogs#0"
    vec = emb.embed(["systems programming language"])[0]
    for mode in (Float32Search(), Int8Rescored()):
        assert redis_store.dense(vec, 2, mode)[0][0] == "rust#0"
    with pytest.raises(ConfigurationError):
        redis_store.dense(vec, 2, BinaryRescored())
    changed = Document(id="rust", text="Rust is iron oxide, a reddish corrosion.")
    assert indexer.upsert([*DOCS[:2], changed]).replaced == ("rust",)
    assert redis_store.chunks(["rust#0"])["rust#0"].text == changed.text
    assert redis_store.doc_hashes(["rust"]) == {"rust": changed.hash}
    assert redis_store.sparse("programming", 3) == []
    assert indexer.delete(["cats"]) == ["cats"]
    assert redis_store.count() == 2
    assert set(redis_store.doc_hashes()) == {"dogs", "rust"}
    memory = {m.name: m for m in redis_store.memory()}
    assert memory["int8_codes"].bytes_per_vector == emb.fingerprint.dim
    assert memory["hash_float32_field"].bytes_per_vector == 4 * emb.fingerprint.dim
    with pytest.raises(FingerprintMismatchError):
        redis_store.bind(HashingEmbedder(dim=32, name="other").fingerprint)


def test_compact_float16_layout(redis_url: str) -> None:
    emb = HashingEmbedder()
    store = RedisRetrievalStore.from_url(
        redis_url, name=f"h{uuid.uuid4().hex[:10]}", vector_type="FLOAT16"
    )
    try:
        Indexer(store, emb, RecursiveSplitter(ChunkingConfig(max_tokens=64))).upsert(DOCS)
        vec = emb.embed(["loyal animals that bark"])[0]
        hits = store.dense(vec, 2, Int8Rescored())
        assert hits[0][0] == "dogs#0"
        with pytest.raises(ConfigurationError, match="FLOAT32 field"):
            store.dense(vec, 2, Float32Search())
        memory = {m.name: m for m in store.memory()}
        assert memory["hash_float16_field"].bytes_per_vector == 2 * emb.fingerprint.dim
    finally:
        store.drop()
        store.close()


def _indexed(store: RedisRetrievalStore) -> HashingEmbedder:
    emb = HashingEmbedder()
    Indexer(store, emb, RecursiveSplitter(ChunkingConfig(max_tokens=64))).upsert(DOCS)
    return emb


def test_drop_leaves_no_key_and_no_index(redis_store: RedisRetrievalStore) -> None:
    _indexed(redis_store)
    client, base = redis_store.client, f"semcache:rag:{redis_store.name}:"
    assert list(client.scan_iter(match=base + "*"))
    assert redis_store.drop() > 0
    assert list(client.scan_iter(match=base + "*")) == []
    assert (base + "idx").encode() not in client.execute_command("FT._LIST")
    assert redis_store.drop() == 0  # nothing left, and no error for the missing index


def test_unreachable_redis_raises_backend_unavailable(tmp_path: Path) -> None:
    """Reads raise BackendUnavailableError, never a raw redis error; then the circuit opens."""
    with pytest.raises(BackendUnavailableError):  # nothing listens there: the capability probe
        RedisRetrievalStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    server = RedisStackServer(tmp_path / "redis")
    server.start()
    store = RedisRetrievalStore.from_url(
        server.url,
        name="outage",
        connection=RedisConnection(socket_timeout=0.25, connect_timeout=0.25),
        breaker=BreakerParams(failure_threshold=4, reset_seconds=60),
    )
    try:
        vec = _indexed(store).embed(["loyal animals that bark"])[0]
        assert store.dense(vec, 1, Int8Rescored())[0][0] == "dogs#0"
        server.stop(kill=True)
        calls = [
            lambda: store.dense(vec, 2, Float32Search()),
            lambda: store.sparse("loyal dogs", 2),
            lambda: store.chunks(["dogs#0"]),
            lambda: store.doc_hashes(),
        ]
        for call in calls:
            with pytest.raises(BackendUnavailableError, match="outage"):
                call()
        assert store.core.breaker.state.is_open
        for call in calls:  # refused by the open circuit, without touching the network
            with pytest.raises(BackendUnavailableError, match="circuit open"):
                call()
    finally:
        store.close()
        server.stop()


def test_only_a_missing_index_is_created(redis_url: str) -> None:
    """FT.INFO refused for another reason (here NOPERM) is an error, not an index to create."""
    import redis

    admin = redis.Redis.from_url(redis_url)
    user, password = f"u{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.execute_command(
        "ACL", "SETUSER", user, "on", f">{password}", "~semcache:*", "+@all", "-ft.info"
    )
    name = f"n{uuid.uuid4().hex[:10]}"
    store = RedisRetrievalStore.from_url(
        redis_url.replace("redis://", f"redis://{user}:{password}@"), name=name
    )
    try:
        with pytest.raises(BackendError, match=r"FT\.INFO") as refused:
            store.bind(HashingEmbedder().fingerprint)
        assert not isinstance(refused.value, BackendUnavailableError)
        assert f"semcache:rag:{name}:idx".encode() not in admin.execute_command("FT._LIST")
    finally:
        store.drop()
        store.close()
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()


def test_wrong_type_key_and_vanished_index_are_backend_errors(
    redis_store: RedisRetrievalStore,
) -> None:
    emb = _indexed(redis_store)
    index = f"semcache:rag:{redis_store.name}:idx"
    redis_store.client.execute_command("FT.DROPINDEX", index)
    with pytest.raises(BackendError, match="no such index") as missing:
        redis_store.sparse("loyal dogs", 2)
    assert not isinstance(missing.value, BackendUnavailableError)
    assert not redis_store.core.breaker.state.is_open
    redis_store.bind(emb.fingerprint)  # a missing index is created again (over the same hashes)
    deadline = time.monotonic() + 10
    while not redis_store.sparse("loyal dogs", 2):
        assert time.monotonic() < deadline, "the recreated index never found the chunks"
        time.sleep(0.05)
    redis_store.client.set(f"semcache:rag:{redis_store.name}:meta", "not a hash")
    with pytest.raises(BackendError, match="WRONGTYPE"):
        redis_store.bind(emb.fingerprint)


def test_store_names_follow_the_cache_key_rules(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="retrieval store name is 1-64 characters"):
        RedisRetrievalStore.from_url(redis_url, name="has space")
    with pytest.raises(ConfigurationError, match="exactly one of url= or client="):
        RedisRetrievalStore()


def _small_scifact(data: Path, n: int) -> tuple[list[Document], list[str]]:
    docs: list[Document] = []
    with (data / "beir-scifact" / "corpus.jsonl").open() as f:
        for line in f:
            rec = json.loads(line)
            docs.append(Document(id=rec["_id"], title=rec["title"], text=rec["text"][:400]))
            if len(docs) == n:
                break
    queries = [f"{d.title.split(':')[0]}" for d in docs[:: max(1, n // 20)]][:20]
    return docs, queries


@pytest.mark.model
@pytest.mark.slow
def test_both_backends_return_the_same_top_results(
    redis_url: str, st_embedder: SentenceTransformerEmbedder, test_data: Path, tmp_path: Path
) -> None:
    docs, queries = _small_scifact(test_data, 120)
    splitter = RecursiveSplitter.for_embedder(st_embedder, ChunkingConfig(max_tokens=128))
    embedded = EmbeddedRetrievalStore(tmp_path / "e", EmbeddedStoreConfig(float32_index=True))
    redis = RedisRetrievalStore.from_url(redis_url, name=f"p{uuid.uuid4().hex[:10]}")
    try:
        for store in (embedded, redis):
            Indexer(store, st_embedder, splitter).upsert(docs)
        assert embedded.count() == redis.count()
        same_dense, same_int8, same_bm25, same_hybrid = 0, 0, 0, 0
        for q in queries:
            vec = st_embedder.embed([q])[0]
            e_fp, r_fp = (
                embedded.dense(vec, 5, Float32Search()),
                redis.dense(vec, 5, Float32Search()),
            )
            assert [c for c, _ in e_fp][:1] == [c for c, _ in r_fp][:1]
            assert e_fp[0][1] == pytest.approx(r_fp[0][1], abs=1e-4)
            same_dense += len({c for c, _ in e_fp} & {c for c, _ in r_fp})
            same_int8 += len(
                {c for c, _ in embedded.dense(vec, 5, Int8Rescored())}
                & {c for c, _ in redis.dense(vec, 5, Int8Rescored())}
            )
            e_bm, r_bm = embedded.sparse(q, 5), redis.sparse(q, 5)
            same_bm25 += int(e_bm[:1] and r_bm[:1] and e_bm[0][0] == r_bm[0][0])
            e_hy = HybridRetriever(embedded, st_embedder).retrieve(q, 3)
            r_hy = HybridRetriever(redis, st_embedder).retrieve(q, 3)
            same_hybrid += int(e_hy[0].chunk.id == r_hy[0].chunk.id)
        n = len(queries)
        assert same_dense / (5 * n) >= 0.95
        assert same_int8 / (5 * n) >= 0.9
        # Different tokenizers and stemmers (bm25s vs the query engine): the top hit agrees.
        assert same_bm25 / n >= 0.85
        assert same_hybrid / n >= 0.85
    finally:
        embedded.close()
        redis.drop()
        redis.close()
