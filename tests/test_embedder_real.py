"""The real all-MiniLM-L6-v2 through sentence-transformers, loaded offline from its package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semcache import (
    CachePolicy,
    ConfigurationError,
    EmbeddedBackend,
    FingerprintMismatchError,
    InvalidInputError,
    ModelLoadError,
    Scope,
    SemanticCache,
    SentenceTransformerEmbedder,
    Tier,
)

pytestmark = pytest.mark.model


def test_packaged_model_embeds_normalised_384d(st_embedder: SentenceTransformerEmbedder) -> None:
    vecs = st_embedder.embed(
        [
            "How do I learn Python quickly?",
            "What is the fastest way to learn Python?",
            "Best sourdough bread recipe",
        ]
    )
    assert vecs.shape == (3, 384)
    assert vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > 0.8 > 0.3 > sims[0, 2]
    fp = st_embedder.fingerprint
    assert fp.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert fp.dim == 384
    assert fp.revision
    assert fp.normalized


def test_memo_returns_identical_vectors(st_embedder: SentenceTransformerEmbedder) -> None:
    a = st_embedder.embed(["memo check sentence"])
    b = st_embedder.embed(["memo check sentence", "another one"])
    assert np.array_equal(a[0], b[0])


def test_batch_equals_single(st_embedder: SentenceTransformerEmbedder) -> None:
    texts = [f"question number {i} about the weather" for i in range(40)]
    fresh = SentenceTransformerEmbedder(memo_size=0, batch_size=16)
    batch = fresh.embed(texts)
    single = np.stack([fresh.embed([t])[0] for t in texts[:5]])
    assert np.allclose(batch[:5], single, atol=1e-5)


def test_mrl_truncation_renormalises_and_changes_fingerprint(
    st_embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    small = SentenceTransformerEmbedder(truncate_dim=128)
    vec = small.embed(["truncate me"])[0]
    full = st_embedder.embed(["truncate me"])[0]
    assert vec.shape == (128,)
    assert abs(float(np.linalg.norm(vec)) - 1) < 1e-5
    assert np.allclose(vec, full[:128] / np.linalg.norm(full[:128]), atol=1e-5)
    assert small.fingerprint.key() != st_embedder.fingerprint.key()
    # A store built with one embedder refuses the other, at construction.
    SemanticCache(embedder=st_embedder, backend=EmbeddedBackend(tmp_path)).close()
    with pytest.raises(FingerprintMismatchError, match="all-MiniLM-L6-v2"):
        SemanticCache(embedder=small, backend=EmbeddedBackend(tmp_path))


def test_any_local_model_path_loads(st_embedder: SentenceTransformerEmbedder) -> None:
    other = SentenceTransformerEmbedder(st_embedder.source)
    assert other.fingerprint.model == st_embedder.source
    assert np.allclose(
        other.embed(["same weights"]), st_embedder.embed(["same weights"]), atol=1e-5
    )


def test_missing_model_fails_clearly_without_the_hub(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="allow_download=False"):
        SentenceTransformerEmbedder("some-org/not-a-local-model")
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="cannot load"):
        SentenceTransformerEmbedder(str(empty))


def test_bad_configuration_and_input(st_embedder: SentenceTransformerEmbedder) -> None:
    with pytest.raises(ConfigurationError):
        SentenceTransformerEmbedder(truncate_dim=1000)
    with pytest.raises(ConfigurationError):
        SentenceTransformerEmbedder(batch_size=0)
    with pytest.raises(InvalidInputError):
        st_embedder.embed("not a list")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        st_embedder.embed([b"bytes"])  # type: ignore[list-item]


def test_real_model_cache_hits_paraphrases_not_unrelated(
    st_embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    scope = Scope(model="gpt-4o-mini")
    with SemanticCache(
        embedder=st_embedder, backend=EmbeddedBackend(tmp_path), policy=CachePolicy()
    ) as cache:
        cache.store("How can I reset my password?", "Use the reset link.", scope)
        hit = cache.lookup("How do I reset my password?", scope)
        assert hit.tier is Tier.SEMANTIC
        assert hit.similarity is not None
        assert hit.similarity > 0.9
        assert not cache.lookup("How can I delete my account?", scope).hit
        assert not cache.lookup("How do I reset my password?", Scope(model="gpt-4o")).hit


def test_retrained_weights_change_the_fingerprint(
    st_embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(st_embedder.source, copy)
    before = SentenceTransformerEmbedder(str(copy)).fingerprint
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8)  # same size, same configs, different weights
    weights.write_bytes(bytes(data))
    from semcache.embedders.sentence_transformers import _revision_of

    assert _revision_of(copy) != before.revision
