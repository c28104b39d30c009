"""The matcher shipped in the package: LoRA adapters on the packaged MiniLM, loaded offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from semcache import (
    AdapterError,
    ConfigurationError,
    EmbeddedBackend,
    FingerprintMismatchError,
    Scope,
    SemanticCache,
    SentenceTransformerEmbedder,
    default_embedder,
)
from semcache.embedders.adapter import Adapter, merge_adapter, read_adapter, write_adapter
from semcache.embedders.shipped import (
    ADAPTER_DIR,
    EMBEDDER,
    RERANKER,
    VERIFIER,
    embedder_adapter,
    verifier_adapter,
)
from semcache.matching.verifier import SHIPPED_BAND, CrossEncoderVerifier, VerifierBand
from semcache.models import Candidate, Entry

SENTENCES = [
    "How do I reset my password?",
    "flights from Paris to London",
    "flights from London to Paris",
    "What is the best way to learn Python quickly?",
    "Wie spät ist es in Tokio?",
]

# -- the adapter file -----------------------------------------------------------------------------


def _tiny(path: Path, a_shape: tuple[int, int], b_shape: tuple[int, int]) -> Path:
    rng = np.random.default_rng(0)
    write_adapter(
        path,
        name="tiny",
        rank=a_shape[0],
        alpha=2.0 * a_shape[0],
        lora={"encoder.layer.0.attention.self.query": (rng.normal(size=a_shape),
                                                       rng.normal(size=b_shape))},
    )  # fmt: skip
    return path


def test_missing_adapter_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="not found"):
        read_adapter(tmp_path / "nope.safetensors")


def test_altered_adapter_file_is_refused(tmp_path: Path) -> None:
    path = _tiny(tmp_path / "a.safetensors", (2, 384), (384, 2))
    with pytest.raises(AdapterError, match="sha256"):
        read_adapter(path, sha256="0" * 64)


def test_adapter_with_inconsistent_ranks_is_refused(tmp_path: Path) -> None:
    path = _tiny(tmp_path / "a.safetensors", (2, 384), (384, 3))
    with pytest.raises(AdapterError, match="expected"):
        read_adapter(path)


def test_not_a_safetensors_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(AdapterError, match="cannot read"):
        read_adapter(path)


def test_shipped_adapters_are_small_and_pinned() -> None:
    for shipped in (EMBEDDER, VERIFIER, RERANKER):
        assert len(shipped.sha256) == 64
        assert shipped.path.stat().st_size < 2_500_000
    # the issues' wheel budget: <= 5 MB for every adapter the package carries
    assert sum(p.stat().st_size for p in ADAPTER_DIR.iterdir()) <= 5_000_000
    emb, ver = embedder_adapter(), verifier_adapter()
    assert emb.rank == ver.rank
    assert emb.tensors == {}  # the embedder adapter is low-rank pairs only
    assert {"classifier.weight", "classifier.bias"} <= set(ver.tensors)


def test_merge_checks_every_shape_before_changing_a_weight(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential()
    model.add_module("encoder", torch.nn.Linear(8, 4))
    rng = np.random.default_rng(0)
    ok = (rng.normal(size=(2, 8)).astype(np.float32), rng.normal(size=(4, 2)).astype(np.float32))
    bad = (rng.normal(size=(2, 5)).astype(np.float32), ok[1])
    before = model.encoder.weight.detach().clone()
    adapter = Adapter(name="x", sha256="0" * 64, rank=2, alpha=4.0,
                      lora={"encoder": ok, "missing": ok}, tensors={})  # fmt: skip
    with pytest.raises(AdapterError, match="no layer missing"):
        merge_adapter(model, adapter)
    assert torch.equal(model.encoder.weight, before)
    with pytest.raises(AdapterError, match="another base model"):
        merge_adapter(model, Adapter(name="x", sha256="0" * 64, rank=2, alpha=4.0,
                                     lora={"encoder": bad}, tensors={}))  # fmt: skip
    merge_adapter(model, Adapter(name="x", sha256="0" * 64, rank=2, alpha=4.0,
                                 lora={"encoder": ok}, tensors={}))  # fmt: skip
    expected = before.numpy() + 2.0 * ok[1] @ ok[0]
    np.testing.assert_allclose(model.encoder.weight.detach().numpy(), expected, rtol=1e-5)


def test_tuned_needs_the_packaged_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="tuned=True"):
        default_embedder(str(tmp_path), tuned=True)


# -- with the real model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tuned_torch() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(adapter=embedder_adapter(), memo_size=0)


@pytest.mark.model
def test_wrong_shaped_adapter_fails_at_construction(tmp_path: Path) -> None:
    adapter = read_adapter(_tiny(tmp_path / "a.safetensors", (2, 100), (384, 2)))
    with pytest.raises(AdapterError, match="another base model"):
        SentenceTransformerEmbedder(adapter=adapter)


@pytest.mark.model
def test_missing_shipped_file_fails_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import semcache.embedders.shipped as shipped

    monkeypatch.setattr(shipped, "ADAPTER_DIR", tmp_path)
    with pytest.raises(AdapterError, match="not found"):
        default_embedder(prefer_onnx=False, tuned=True)


@pytest.mark.model
def test_adapter_loads_offline_and_changes_the_fingerprint(
    tuned_torch: SentenceTransformerEmbedder, st_embedder: SentenceTransformerEmbedder
) -> None:
    plain = st_embedder.fingerprint
    tuned = tuned_torch.fingerprint
    assert tuned != plain
    assert tuned.key() != plain.key()
    assert tuned.variant == f"lora-{EMBEDDER.sha256[:12]}"
    assert (tuned.model, tuned.dim, tuned.revision) == (plain.model, plain.dim, plain.revision)
    a, b = tuned_torch.embed(SENTENCES), st_embedder.embed(SENTENCES)
    assert float((a * b).sum(axis=1).min()) < 0.999  # the adapter changes the vectors


@pytest.mark.model
def test_default_embedder_is_tuned_and_plain_is_one_argument_away(
    st_embedder: SentenceTransformerEmbedder, tuned_torch: SentenceTransformerEmbedder
) -> None:
    assert default_embedder(prefer_onnx=False).fingerprint == tuned_torch.fingerprint
    assert default_embedder(prefer_onnx=False, tuned=False).fingerprint == st_embedder.fingerprint


def test_another_model_is_plain_by_default(tmp_path: Path) -> None:
    """``tuned=None`` only applies the shipped adapter to the model it was trained on."""
    from semcache.errors import ModelLoadError

    with pytest.raises(ModelLoadError) as e:  # an empty directory: no model to load
        default_embedder(str(tmp_path), prefer_onnx=False)
    assert not isinstance(e.value, AdapterError)


def test_shipped_band_has_no_floor_of_its_own() -> None:
    """The policy's threshold is the floor: a lower one is verified, not refused as below_band."""
    from semcache.policy import DEFAULT_MIN_SIMILARITY

    assert SHIPPED_BAND.low == -1.0
    assert SHIPPED_BAND.high > DEFAULT_MIN_SIMILARITY
    assert SHIPPED_BAND.reorder_overlap is not None


@pytest.mark.model
def test_onnx_and_torch_agree_with_the_adapter_merged(
    tuned_torch: SentenceTransformerEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pytest.importorskip("onnxruntime")
    from semcache.embedders.onnx import OnnxEmbedder

    onnx = OnnxEmbedder(
        adapter=embedder_adapter(),
        cache_dir=tmp_path_factory.mktemp("onnx"),
        intra_op_threads=1,
        memo_size=0,
    )
    assert onnx.fingerprint == tuned_torch.fingerprint
    cos = (onnx.embed(SENTENCES) * tuned_torch.embed(SENTENCES)).sum(axis=1)
    assert float(cos.min()) > 0.999


@pytest.mark.model
@pytest.mark.parametrize("first_tuned", [False, True])
def test_a_store_refuses_the_other_matcher(
    tmp_path: Path,
    first_tuned: bool,
    st_embedder: SentenceTransformerEmbedder,
    tuned_torch: SentenceTransformerEmbedder,
) -> None:
    first, second = (tuned_torch, st_embedder) if first_tuned else (st_embedder, tuned_torch)
    with SemanticCache(embedder=first, backend=EmbeddedBackend(tmp_path)) as cache:
        cache.store("How do I reset my password?", {"a": 1}, Scope())
    with pytest.raises(FingerprintMismatchError):
        SemanticCache(embedder=second, backend=EmbeddedBackend(tmp_path))


# -- the shipped verifier --------------------------------------------------------------------------


def _candidate(prompt: str, similarity: float) -> Candidate:
    entry = Entry(id="1", scope_key="", text_key="", prompt=prompt, response=None, created_at=0)
    return Candidate(entry, similarity)


@pytest.mark.model
def test_onnx_and_torch_verifier_agree(tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("onnxruntime")
    from semcache.matching.onnx_verifier import OnnxPairScorer, torch_cross_encoder

    adapter = verifier_adapter()
    scorer = OnnxPairScorer(adapter, cache_dir=tmp_path_factory.mktemp("onnx-verifier"))
    onnx = CrossEncoderVerifier(scorer)
    torch_ = CrossEncoderVerifier(torch_cross_encoder(adapter))
    pairs = list(zip(SENTENCES, SENTENCES[1:] + SENTENCES[:1], strict=True))
    np.testing.assert_allclose(onnx.score(pairs), torch_.score(pairs), atol=1e-3)


@pytest.mark.model
def test_verifier_runs_only_inside_its_band() -> None:
    from semcache.matching.onnx_verifier import torch_cross_encoder

    band = VerifierBand(low=0.9, high=0.97, min_score=SHIPPED_BAND.min_score)
    verifier = CrossEncoderVerifier(torch_cross_encoder(verifier_adapter()), band=band)
    assert verifier("flights from Paris to London", _candidate("x", 0.99)) is None
    assert verifier("flights from Paris to London", _candidate("x", 0.5)) == "below_band"
    assert verifier.stats().calls == 0
    verifier("flights from Paris to London", _candidate("flights from London to Paris", 0.95))
    stats = verifier.stats()
    assert (stats.calls, stats.above_band, stats.below_band) == (1, 1, 1)


@pytest.mark.model
def test_damaged_export_of_the_verifier_is_refused(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A scorer refuses an export whose files it reads were changed; a change to the other
    model's files (fp32 vs int8) does not concern it (it neither reads nor hashes them)."""
    pytest.importorskip("onnxruntime")
    from semcache.errors import ModelLoadError
    from semcache.matching.onnx_verifier import OnnxPairScorer, ensure_verifier_export

    root = tmp_path_factory.mktemp("onnx-verifier-damaged")
    directory = ensure_verifier_export(verifier_adapter(), cache_dir=root)
    copy = directory.with_name(directory.name + "-orig")
    shutil.copytree(directory, copy)
    for name, refused in (
        ("reference.npy", (False,)),
        ("verifier.int8.onnx", (True,)),
        ("tokenizer.json", (False, True)),
    ):
        data = bytearray((directory / name).read_bytes())
        data[-1] ^= 0x01
        (directory / name).write_bytes(bytes(data))
        for int8 in (False, True):
            if int8 in refused:
                with pytest.raises(ModelLoadError, match="sha256"):
                    OnnxPairScorer(verifier_adapter(), cache_dir=root, int8=int8)
            else:
                assert OnnxPairScorer(verifier_adapter(), cache_dir=root, int8=int8).int8 is int8
        shutil.rmtree(directory)
        shutil.copytree(copy, directory)


@pytest.mark.model
def test_int8_verifier_tracks_the_fp32_one(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The int8 copy (the default) is checked against its own probe probabilities at load and
    ranks pairs as the fp32 export does."""
    pytest.importorskip("onnxruntime")
    from semcache.matching.onnx_verifier import OnnxPairScorer

    root = tmp_path_factory.mktemp("onnx-verifier-int8")
    fp32 = OnnxPairScorer(verifier_adapter(), cache_dir=root)
    int8 = OnnxPairScorer(verifier_adapter(), cache_dir=root, int8=True)
    assert (fp32.int8, int8.int8) == (False, True)
    assert int8.agreement <= 1e-3
    pairs = [(a, b) for a in SENTENCES for b in SENTENCES if a != b]
    p32, p8 = fp32.probabilities(pairs), int8.probabilities(pairs)
    assert float(np.corrcoef(p32, p8)[0, 1]) > 0.9
    assert not np.allclose(p32, p8)  # a real int8 model, not the fp32 file again
