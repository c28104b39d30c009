"""int8 / binary quantization: exact arithmetic, and recall against float32 on real embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from semcache import SentenceTransformerEmbedder
from semcache.errors import ConfigurationError, InvalidInputError
from semcache.retrieval.base import BinaryRescored, Float32Search, Int8Rescored
from semcache.retrieval.documents import Chunk, Document
from semcache.retrieval.quantization import (
    BinaryQuantizer,
    Int8Quantizer,
    Projection,
    hamming_distances,
)
from semcache.retrieval.store import EmbeddedRetrievalStore, EmbeddedStoreConfig


def test_int8_roundtrip_error_is_within_half_a_step() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    q = Int8Quantizer.calibrate(x)
    codes = q.encode(x)
    assert codes.dtype == np.int8
    assert codes.min() == -128
    assert codes.max() == 127
    assert np.abs(q.decode(codes) - x).max() <= q.scale.max() / 2 + 1e-6
    query = rng.normal(size=16).astype(np.float32)
    assert np.allclose(q.scores(query, codes), q.decode(codes) @ query, atol=1e-4)
    again = Int8Quantizer.from_dict(json.loads(json.dumps(q.to_dict())))
    assert np.array_equal(again.encode(x), codes)


def test_binary_codes_and_hamming() -> None:
    x = np.array([[1.0, -1.0, 2.0], [-1.0, 1.0, 0.5], [0.0, 0.0, 0.0]], dtype=np.float32)
    b = BinaryQuantizer.calibrate(x)  # medians: 0, 0, 0.5
    codes = b.encode(x)
    assert b.bytes_per_vector == 1
    assert codes.shape == (3, 1)
    assert hamming_distances(codes[0], codes).tolist() == [0, 3, 2]


def test_projection_keeps_the_top_directions() -> None:
    x = np.zeros((4, 3), dtype=np.float32)
    x[:, 0] = [3, -3, 3, -3]
    x[:, 1] = [1, 1, -1, -1]
    p = Projection.calibrate(x, 1)
    assert np.allclose(np.abs(p.components), [[1.0, 0.0, 0.0]], atol=1e-6)
    with pytest.raises(ConfigurationError):
        Projection.calibrate(x, 4)


def test_calibration_refuses_bad_input() -> None:
    with pytest.raises(InvalidInputError):
        Int8Quantizer.calibrate(np.empty((0, 4), dtype=np.float32))
    with pytest.raises(InvalidInputError):
        Int8Quantizer.calibrate(np.array([[np.nan, 1.0]], dtype=np.float32))


def _scifact(data: Path, n_docs: int, n_queries: int) -> tuple[list[Document], list[str]]:
    docs = []
    with (data / "beir-scifact" / "corpus.jsonl").open() as f:
        for line in f:
            rec = json.loads(line)
            docs.append(Document(id=rec["_id"], text=rec["title"]))
            if len(docs) == n_docs:
                break
    with (data / "beir-scifact" / "queries.jsonl").open() as f:
        queries = [json.loads(line)["text"] for line, _ in zip(f, range(n_queries), strict=False)]
    return docs, queries


@pytest.mark.model
def test_int8_recall_at_10_against_float32_on_real_embeddings(
    st_embedder: SentenceTransformerEmbedder, test_data: Path, tmp_path: Path
) -> None:
    docs, queries = _scifact(test_data, 600, 60)  # SciFact titles and claims, real text
    vectors = st_embedder.embed([d.text for d in docs])
    qvecs = st_embedder.embed(queries)
    exact = np.argsort(-(qvecs @ vectors.T), axis=1)[:, :10]

    # int8 scoring of every vector (no first stage) against the float32 query
    q8 = Int8Quantizer.calibrate(vectors)
    codes = q8.encode(vectors)
    approx = np.stack([np.argsort(-q8.scores(q, codes))[:10] for q in qvecs])
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95
    assert q8.bytes_per_vector * 4 == vectors.shape[1] * 4  # 384 B vs 1536 B: 4x smaller

    # the store's pipelines: compact HNSW -> int8, and binary -> int8 -> float32
    chunks = [
        Chunk(id=Chunk.make_id(d.id, 0), doc_id=d.id, index=0, text=d.text, doc_hash=d.hash)
        for d in docs
    ]
    config = EmbeddedStoreConfig(float32_index=True, binary_index=True)
    with EmbeddedRetrievalStore(tmp_path / "store", config) as store:
        store.bind(st_embedder.fingerprint)
        store.replace(docs, chunks, vectors)
        ids = [c.id for c in chunks]
        truth = [{ids[i] for i in row} for row in exact]
        for mode, floor in (
            (Float32Search(), 0.97),
            (Int8Rescored(), 0.9),
            (BinaryRescored(), 0.9),
        ):
            got = [{cid for cid, _ in store.dense(q, 10, mode)} for q in qvecs]
            mode_recall = np.mean([len(g & t) / 10 for g, t in zip(got, truth, strict=True)])
            assert mode_recall >= floor, (mode, mode_recall)
        sizes = store.vector_bytes()
        assert sizes == {"float32": 1536, "int8": 384, "compact": 384, "binary": 48}
        memory = {m.name: m for m in store.memory()}
        assert memory["int8_codes"].resident is False  # memory-mapped from disk
        assert memory["int8_codes"].bytes_per_vector == 384
        assert memory["binary_codes"].bytes_per_vector == 48
