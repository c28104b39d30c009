"""The ONNX Runtime encoder against the real torch model, on real sentences (QQP, STS-B)."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semcache import (
    ConfigurationError,
    EmbeddedBackend,
    FingerprintMismatchError,
    MemoryBackend,
    ModelFingerprint,
    ModelLoadError,
    Scope,
    SemanticCache,
    SentenceTransformerEmbedder,
)
from semcache.embedders.default import default_embedder
from semcache.embedders.export import FP32_FILE, ensure_export
from semcache.embedders.onnx import FP32_MIN_COSINE, OnnxEmbedder
from semcache.embedders.pooling import POOLING_MODES, PoolingSpec, pool, read_pooling
from semcache.policy import DEFAULT_MIN_SIMILARITY

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
N_PAIRS = 300


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_embedder(onnx_cache: Path) -> OnnxEmbedder:
    """The packaged model exported into a fresh cache dir (the export happens here, once)."""
    return OnnxEmbedder(cache_dir=onnx_cache, intra_op_threads=1)


@pytest.fixture(scope="module")
def int8_embedder(onnx_embedder: OnnxEmbedder, onnx_cache: Path) -> OnnxEmbedder:
    return OnnxEmbedder(cache_dir=onnx_cache, int8=True, intra_op_threads=1)


@pytest.fixture(scope="module")
def qqp_pairs(test_data: Path) -> list[dict[str, Any]]:
    path = test_data / "qqp" / "pairs.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(N_PAIRS), f, strict=False)]


@pytest.fixture(scope="module")
def sts_sentences(test_data: Path) -> list[str]:
    path = test_data / "stsb" / "sts-dev.csv"  # images and track5 captions (see data/README.md)
    with path.open(encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [s for row in rows[:100] for s in row[5:7]]


# -- agreement with torch ------------------------------------------------------------------------


def test_fp32_fingerprint_is_torchs(
    onnx_embedder: OnnxEmbedder, st_embedder: SentenceTransformerEmbedder
) -> None:
    assert onnx_embedder.fingerprint == st_embedder.fingerprint
    assert onnx_embedder.backend == "onnx"
    assert st_embedder.backend == "torch"
    assert onnx_embedder.agreement.min_cosine >= FP32_MIN_COSINE


def test_fp32_vectors_match_torch_on_real_sentences(
    onnx_embedder: OnnxEmbedder,
    st_embedder: SentenceTransformerEmbedder,
    qqp_pairs: list[dict[str, Any]],
    sts_sentences: list[str],
) -> None:
    texts = [p["text_a"] for p in qqp_pairs[:100]] + sts_sentences
    fast, slow = onnx_embedder.embed(texts), st_embedder.embed(texts)
    assert fast.shape == slow.shape == (len(texts), 384)
    assert fast.dtype == np.float32
    cosines = (fast * slow).sum(axis=1)
    assert cosines.min() >= FP32_MIN_COSINE, texts[int(cosines.argmin())]
    # One at a time (no padding) gives the same vectors as in a padded batch.
    single = np.vstack([onnx_embedder.embed([t]) for t in texts[:5]])
    assert np.allclose(single, fast[:5], atol=1e-5)


THRESHOLDS = (0.9, DEFAULT_MIN_SIMILARITY)  # the 0.9 and the current default


def _decisions(embedder: Any, pairs: list[dict[str, Any]]) -> list[tuple[bool, ...]]:
    """Store each text_a in its own scope, look text_b up: hit or miss at each threshold."""
    cache = SemanticCache(embedder=embedder, backend=MemoryBackend())
    vec_a = embedder.embed([p["text_a"] for p in pairs])
    vec_b = embedder.embed([p["text_b"] for p in pairs])
    hits = []
    for i, p in enumerate(pairs):
        scope = Scope(namespace=str(i))
        cache.store(p["text_a"], {"answer": i}, scope, vector=vec_a[i])
        hits.append(
            tuple(
                cache.lookup(p["text_b"], scope, min_similarity=t, vector=vec_b[i]).hit
                for t in THRESHOLDS
            )
        )
    cache.close()
    return hits


@pytest.mark.slow
def test_cache_decisions_identical_on_qqp_pairs(
    onnx_embedder: OnnxEmbedder,
    st_embedder: SentenceTransformerEmbedder,
    qqp_pairs: list[dict[str, Any]],
) -> None:
    fast, slow = _decisions(onnx_embedder, qqp_pairs), _decisions(st_embedder, qqp_pairs)
    assert fast == slow
    for k in range(len(THRESHOLDS)):  # both outcomes occur, so the comparison means something
        assert 0 < sum(d[k] for d in fast) < len(fast)
    a = onnx_embedder.embed([p["text_a"] for p in qqp_pairs])
    b = onnx_embedder.embed([p["text_b"] for p in qqp_pairs])
    sims = (a * b).sum(axis=1)
    for t in THRESHOLDS:
        assert (np.abs(sims - t) < 0.02).sum() >= 5  # pairs close to the threshold are among them


def test_torch_and_onnx_share_one_embedded_index(
    tmp_path: Path,
    onnx_embedder: OnnxEmbedder,
    int8_embedder: OnnxEmbedder,
    st_embedder: SentenceTransformerEmbedder,
) -> None:
    with SemanticCache(embedder=st_embedder, backend=EmbeddedBackend(tmp_path / "c")) as cache:
        cache.store("How can I lose weight fast?", "eat less, move more")
    with SemanticCache(embedder=onnx_embedder, backend=EmbeddedBackend(tmp_path / "c")) as cache:
        result = cache.lookup("How can I lose weight quickly?", min_similarity=0.9)
        assert result.hit
        expected = st_embedder.embed(
            ["How can I lose weight fast?", "How can I lose weight quickly?"]
        )
        assert result.similarity == pytest.approx(float(expected[0] @ expected[1]), abs=1e-4)
        assert result.entry is not None
        assert result.entry.response == "eat less, move more"
    with pytest.raises(FingerprintMismatchError):
        SemanticCache(embedder=int8_embedder, backend=EmbeddedBackend(tmp_path / "c"))


# -- int8 ----------------------------------------------------------------------------------------


def test_int8_has_its_own_fingerprint_and_bounded_quality_cost(
    int8_embedder: OnnxEmbedder, onnx_embedder: OnnxEmbedder, qqp_pairs: list[dict[str, Any]]
) -> None:
    assert int8_embedder.fingerprint.variant == "onnx-int8"
    assert int8_embedder.fingerprint.key() != onnx_embedder.fingerprint.key()
    assert int8_embedder.export.directory == onnx_embedder.export.directory
    texts = [p["text_a"] for p in qqp_pairs[:100]]
    cosines = (int8_embedder.embed(texts) * onnx_embedder.embed(texts)).sum(axis=1)
    assert cosines.mean() >= 0.98
    assert cosines.min() >= 0.95
    agree = np.mean(
        np.array(_decisions(int8_embedder, qqp_pairs))
        == np.array(_decisions(onnx_embedder, qqp_pairs))
    )
    assert agree >= 0.95  # measured 0.98 at 0.9


# -- export cache --------------------------------------------------------------------------------


def test_export_is_reused_on_second_start(onnx_embedder: OnnxEmbedder, onnx_cache: Path) -> None:
    first = onnx_embedder.export
    model_file = first.directory / FP32_FILE
    mtime = model_file.stat().st_mtime_ns
    again = OnnxEmbedder(cache_dir=onnx_cache, intra_op_threads=1)
    assert first.created
    assert not again.export.created
    assert again.export.directory == first.directory
    assert model_file.stat().st_mtime_ns == mtime
    assert again.export.manifest == first.manifest
    assert [d.name for d in onnx_cache.iterdir()] == [first.directory.name]  # no leftovers


def test_warm_start_imports_neither_torch_nor_transformers(
    onnx_embedder: OnnxEmbedder, onnx_cache: Path
) -> None:
    code = (
        "import sys\n"
        "from semcache.embedders.onnx import OnnxEmbedder\n"
        f"e = OnnxEmbedder(cache_dir={str(onnx_cache)!r}, intra_op_threads=1)\n"
        "v = e.embed(['is the export reused?'])\n"
        "assert not e.export.created and v.shape == (1, 384)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers')"
        " if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_matryoshka_truncation(onnx_embedder: OnnxEmbedder, onnx_cache: Path) -> None:
    small = OnnxEmbedder(cache_dir=onnx_cache, truncate_dim=128, intra_op_threads=1)
    assert small.fingerprint == ModelFingerprint(
        model=onnx_embedder.fingerprint.model,
        dim=128,
        revision=onnx_embedder.fingerprint.revision,
        variant="mrl128",
    )
    full = onnx_embedder.embed(["truncate me"])[0, :128]
    assert np.allclose(small.embed(["truncate me"])[0], full / np.linalg.norm(full), atol=1e-6)
    with pytest.raises(ConfigurationError, match="exceeds"):
        OnnxEmbedder(cache_dir=onnx_cache, truncate_dim=1000)


# -- choosing the backend ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dense_model_dir(
    st_embedder: SentenceTransformerEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A real sentence-transformers model with a Dense head: outside what the ONNX path exports."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense

    torch.manual_seed(0)
    modules = [st_embedder.model[0], st_embedder.model[1], Dense(384, 64)]
    path = tmp_path_factory.mktemp("dense-model")
    SentenceTransformer(modules=modules, device="cpu").save(str(path))
    return path


def test_factory_prefers_onnx(onnx_embedder: OnnxEmbedder, onnx_cache: Path) -> None:
    chosen = default_embedder(cache_dir=onnx_cache, threads=1, tuned=False)
    assert isinstance(chosen, OnnxEmbedder)
    assert chosen.backend == "onnx"
    torch_only = default_embedder(prefer_onnx=False, tuned=False)
    assert isinstance(torch_only, SentenceTransformerEmbedder)
    assert torch_only.backend == "torch"
    assert torch_only.fingerprint == chosen.fingerprint


def test_factory_falls_back_to_torch_when_export_is_unsupported(
    dense_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ModelLoadError, match="Dense"):
        read_pooling(dense_model_dir)
    chosen = default_embedder(str(dense_model_dir), cache_dir=tmp_path)
    assert isinstance(chosen, SentenceTransformerEmbedder)
    assert chosen.backend == "torch"
    assert chosen.dim == 64
    assert "falling back to torch" in caplog.text
    # int8 vectors have their own fingerprint, so there is no silent fallback for them.
    with pytest.raises(ModelLoadError):
        default_embedder(str(dense_model_dir), cache_dir=tmp_path, int8=True)
    with pytest.raises(ConfigurationError):
        default_embedder(prefer_onnx=False, int8=True)


def test_export_that_disagrees_with_torch_is_refused(
    onnx_embedder: OnnxEmbedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = onnx_embedder.export.directory
    copy = tmp_path / source.name
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("*.int8.onnx"))
    reference = np.load(copy / "reference.npy")
    np.save(copy / "reference.npy", np.roll(reference, 1, axis=0))  # each probe vs another's
    _record_digest(copy, "reference.npy")  # consistent files: the agreement check must catch it
    with pytest.raises(ModelLoadError, match="agrees with torch only"):
        OnnxEmbedder(cache_dir=tmp_path, intra_op_threads=1)
    chosen = default_embedder(cache_dir=tmp_path, memo_size=0, tuned=False)
    assert isinstance(chosen, SentenceTransformerEmbedder)
    assert "agrees with torch only" in caplog.text


def _copy_export(embedder: OnnxEmbedder, root: Path, *, int8: bool = False) -> Path:
    """A copy of ``embedder``'s export under another cache root (its key, so it is found)."""
    source = embedder.export.directory
    copy = root / source.name
    ignore = None if int8 else shutil.ignore_patterns("*.int8.*")
    shutil.copytree(source, copy, ignore=ignore)
    return copy


def _record_digest(directory: Path, name: str) -> None:
    """Rewrite the manifest's digest of ``name`` to match the file (as a writer of the folder
    could)."""
    import hashlib

    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["sha256"][name] = hashlib.sha256((directory / name).read_bytes()).hexdigest()
    path.write_text(json.dumps(manifest))


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_export_records_the_digests_it_checks(onnx_embedder: OnnxEmbedder) -> None:
    import hashlib

    directory = onnx_embedder.export.directory
    recorded = json.loads((directory / "manifest.json").read_text())["sha256"]
    assert set(recorded) == {"model.onnx", "tokenizer.json", "reference.npy"}
    for name, digest in recorded.items():
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json", "reference.npy"])
def test_export_changed_after_writing_is_refused(
    onnx_embedder: OnnxEmbedder, tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    copy = _copy_export(onnx_embedder, tmp_path)
    target = copy / name
    _flip_byte(target, target.stat().st_size // 2)  # inside the weights, text or vectors
    with pytest.raises(ModelLoadError, match="does not match the sha256"):
        ensure_export(cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="does not match the sha256"):
        OnnxEmbedder(cache_dir=tmp_path, intra_op_threads=1)
    # The factory refuses it too, and says so, before falling back to torch.
    chosen = default_embedder(cache_dir=tmp_path, memo_size=0, tuned=False)
    assert isinstance(chosen, SentenceTransformerEmbedder)
    assert "does not match the sha256" in caplog.text


def test_swapped_model_and_reference_are_refused(
    onnx_embedder: OnnxEmbedder, tmp_path: Path
) -> None:
    """Replacing the model and its reference vectors together passes the torch agreement
    check; the digests still catch it."""
    copy = _copy_export(onnx_embedder, tmp_path)
    _flip_byte(copy / FP32_FILE, (copy / FP32_FILE).stat().st_size // 2)
    reference = np.load(copy / "reference.npy")
    np.save(copy / "reference.npy", reference + np.float32(1e-3))
    with pytest.raises(ModelLoadError, match="does not match the sha256"):
        OnnxEmbedder(cache_dir=tmp_path, intra_op_threads=1)


def test_changed_int8_model_is_refused(
    int8_embedder: OnnxEmbedder, onnx_embedder: OnnxEmbedder, tmp_path: Path
) -> None:
    copy = _copy_export(onnx_embedder, tmp_path, int8=True)
    assert (copy / "model.int8.sha256").is_file()
    assert not ensure_export(cache_dir=tmp_path, int8=True).int8_created  # intact: reused
    _flip_byte(copy / "model.int8.onnx", (copy / "model.int8.onnx").stat().st_size // 2)
    with pytest.raises(ModelLoadError, match="does not match the sha256"):
        OnnxEmbedder(cache_dir=tmp_path, int8=True, intra_op_threads=1)
    (copy / "model.int8.sha256").unlink()
    with pytest.raises(ModelLoadError, match="no readable digest"):
        ensure_export(cache_dir=tmp_path, int8=True)
    assert ensure_export(cache_dir=tmp_path).manifest == onnx_embedder.export.manifest


def test_export_writable_by_others_is_logged(
    onnx_embedder: OnnxEmbedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = _copy_export(onnx_embedder, tmp_path)
    copy.chmod(0o757)
    ensure_export(cache_dir=tmp_path)
    assert "writable by its group or by others" in caplog.text


def test_unwritable_cache_dir_is_a_load_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ModelLoadError, match="cannot write"):
        ensure_export(cache_dir=blocker / "onnx")


# -- pooling -------------------------------------------------------------------------------------


def test_read_pooling_of_the_packaged_model(st_embedder: SentenceTransformerEmbedder) -> None:
    assert read_pooling(Path(st_embedder.source)) == PoolingSpec(modes=("mean",))


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_numpy_pooling_matches_sentence_transformers(mode: str) -> None:
    import torch
    from sentence_transformers.sentence_transformer.modules import Pooling

    rng = np.random.default_rng(7)
    tokens = rng.normal(size=(3, 6, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=np.int64)
    features = {
        "token_embeddings": torch.from_numpy(tokens),
        "attention_mask": torch.from_numpy(mask),
    }
    expected = Pooling(8, pooling_mode=mode)(features)["sentence_embedding"].numpy()
    got = pool(tokens, mask, PoolingSpec(modes=(mode,)))
    assert np.allclose(got, expected, atol=1e-5)


def test_pooling_concatenates_modes_in_order() -> None:
    tokens = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    mask = np.array([[1, 1, 0]], dtype=np.int64)
    got = pool(tokens, mask, PoolingSpec(modes=("cls", "max")))
    assert got.tolist() == [[0, 1, 2, 3, 4, 5, 6, 7]]
    with pytest.raises(ConfigurationError, match="pooling mode"):
        PoolingSpec(modes=("median",))


def test_onnx_window_reads_like_sentence_transformers(
    onnx_embedder: OnnxEmbedder, st_embedder: SentenceTransformerEmbedder
) -> None:
    texts = ["what is 🍕?", 'What does "无语" mean?', "word " * 400 + "and then a question?"]
    st_window = st_embedder.text_window
    assert st_window is not None
    assert onnx_embedder.text_window.max_tokens == st_window.max_tokens == 256
    for text in texts:
        assert onnx_embedder.text_window.unread(text) == st_window.unread(text)
    assert onnx_embedder.text_window.unread(texts[2]).tail.endswith("a question?")
