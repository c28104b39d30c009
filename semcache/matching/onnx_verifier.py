"""The shipped cross-encoder verifier on ONNX Runtime: exported once, then loaded without torch.

:func:`ensure_verifier_export` builds the verifier with torch (the packaged all-MiniLM-L6-v2, a
one-logit classification head, the shipped adapter merged in), exports it to ONNX under the same
cache root as the embedder exports (:func:`semcache.embedders.export.cache_root`) and records
torch's probabilities on :data:`PROBE_PAIRS`. :class:`OnnxPairScorer` loads the export with
onnxruntime and the model's fast tokenizer, checks the sha256 digests of the files it reads and
its agreement with torch on the probe pairs, and scores (query, cached prompt) pairs. The export
also holds an int8 copy (dynamic int8 MatMul weights, about twice as fast on CPU), checked
against its own probe probabilities; ``OnnxPairScorer(int8=True)`` loads it.
:class:`TorchPairScorer` scores without ONNX Runtime. Any cross-encoder adapter of this kind
(one with a classification head) runs the same way, e.g. a retrieval reranker's
(:class:`semcache.retrieval.rerank.CrossEncoderScorer`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.embedders.adapter import Adapter, file_sha256, merge_adapter
from semcache.embedders.export import (
    OPSET,
    build_atomically,
    cache_root,
    check_digest,
    quantize_matmuls,
    warn_if_shared,
)
from semcache.errors import AdapterError, MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "MAX_PROBE_GAP",
    "PROBE_PAIRS",
    "OnnxPairScorer",
    "TorchPairScorer",
    "check_cross_encoder",
    "ensure_verifier_export",
    "pair_scorer",
]

log = logging.getLogger("semcache")

VERIFIER_EXPORT_FORMAT = 2
MODEL_FILE, TOKENIZER_FILE, REFERENCE_FILE = "verifier.onnx", "tokenizer.json", "reference.npy"
INT8_MODEL_FILE, INT8_REFERENCE_FILE = "verifier.int8.onnx", "reference.int8.npy"
MANIFEST_FILE = "manifest.json"
DIGESTED = (MODEL_FILE, TOKENIZER_FILE, REFERENCE_FILE, INT8_MODEL_FILE, INT8_REFERENCE_FILE)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")

#: Largest difference in probability allowed between ONNX Runtime and torch on a probe pair.
MAX_PROBE_GAP = 1e-3

PROBE_PAIRS = (
    ("How do I reset my password?", "how can I reset my password"),
    ("flights from Paris to London", "flights from London to Paris"),
    ("What is the capital of France?", "What is the capital of Germany?"),
    ("ok", "okay"),
    ("Is 1729 a taxicab number?", "Why is 1729 called the Hardy-Ramanujan number?"),
    (" ".join(["The quick brown fox jumps over the lazy dog."] * 40), "a fox and a dog"),
)


def _base_dir() -> Path:
    from semcache.embedders.export import resolve_model

    return resolve_model("all-MiniLM-L6-v2")[1]


def export_directory(adapter: Adapter, max_length: int, cache_dir: Path | str | None) -> Path:
    from semcache.embedders.sentence_transformers import _revision_of

    base = _base_dir()
    basis = {
        "format": VERIFIER_EXPORT_FORMAT,
        "opset": OPSET,
        "base": _revision_of(base),
        "source": str(base),
        "adapter": adapter.sha256,
        "max_length": max_length,
    }
    key = hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", adapter.name) or "verifier"
    return cache_root(cache_dir) / f"{slug}-{key}"


#: The classification head's weight: what makes an adapter a cross-encoder's.
HEAD = "classifier.weight"


def check_cross_encoder(adapter: Adapter) -> None:
    """Raise :class:`AdapterError` for an adapter without a classification head (an embedder's)."""
    if HEAD not in adapter.tensors:
        raise AdapterError(
            f"the adapter {adapter.name} has no classification head ({HEAD}): "
            "it is an embedder's adapter, not a cross-encoder's"
        )


def torch_cross_encoder(adapter: Adapter, max_length: int = 128) -> Any:
    """The verifier as a sentence-transformers ``CrossEncoder`` (torch), adapter merged.

    Raises :class:`AdapterError` for an adapter without a classification head (an embedder's).
    """
    check_cross_encoder(adapter)
    try:
        from sentence_transformers import CrossEncoder
        from transformers.utils import logging as hf_logging
    except ImportError as e:
        raise MissingDependencyError("sentence-transformers", "embeddings") from e
    base = _base_dir()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # the head is set below
    try:
        model = CrossEncoder(
            str(base), num_labels=1, max_length=max_length, device="cpu", local_files_only=True
        )
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot build the verifier on {base}: {e}") from e
    finally:
        hf_logging.set_verbosity(verbosity)
    merge_adapter(model.model, adapter)
    model.eval()
    return model


def ensure_verifier_export(
    adapter: Adapter,
    *,
    max_length: int = 128,
    cache_dir: Path | str | None = None,
    files: tuple[str, ...] = DIGESTED,
) -> Path:
    """The directory of the verifier's ONNX export, exporting it first if there is none.

    The sha256 of each of ``files`` (those the caller will read) is checked against the
    manifest."""
    directory = export_directory(adapter, max_length, cache_dir)

    def read(d: Path) -> dict[str, Any] | None:
        return _read_manifest(d, files)

    if read(directory) is not None:
        return directory

    def write(tmp: Path) -> None:
        manifest = _export(tmp, adapter, max_length)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")

    build_atomically(directory, write, read, "the verifier's ONNX export")
    return directory


def _read_manifest(directory: Path, files: tuple[str, ...]) -> dict[str, Any] | None:
    path = directory / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        digests = dict(manifest["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"corrupt verifier export manifest {path}: {e}; delete it") from e
    warn_if_shared(directory, files)
    for name in files:
        check_digest(directory / name, digests.get(name))
    return manifest


def _export(out: Path, adapter: Adapter, max_length: int) -> dict[str, Any]:
    try:
        import torch
        from tokenizers import Tokenizer
    except ImportError as e:
        raise MissingDependencyError(e.name or "torch", "embeddings") from e
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
    except ImportError as e:
        raise MissingDependencyError("onnx", "onnx") from e
    log.info("semcache: exporting the verifier %s to ONNX in %s (once)", adapter.name, out.parent)
    started = time.perf_counter()
    cross = torch_cross_encoder(adapter, max_length)
    hf_model, hf_tok = cross.model, cross.tokenizer
    try:
        # before the export: tracing a wrapper module leaves the model in training mode
        reference = _torch_probabilities(cross, list(PROBE_PAIRS))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
            tok.enable_truncation(max_length, strategy="longest_first")
            tok.enable_padding(
                pad_id=int(hf_tok.pad_token_id or 0), pad_token=str(hf_tok.pad_token)
            )
            tok.save(str(out / TOKENIZER_FILE))
            sample = tok.encode_batch([("a short one", "and another"), ("a longer one", "b")])
            args = tuple(
                torch.tensor(np.array([getattr(e, _ATTR[n]) for e in sample], dtype=np.int64))
                for n in INPUTS
            )

            class Logits(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.model = hf_model

                def forward(self, *tensors: Any) -> Any:
                    kwargs = dict(zip(INPUTS, tensors, strict=True))
                    return self.model(**kwargs, return_dict=True).logits

            axes = {n: {0: "batch", 1: "sequence"} for n in INPUTS} | {"logits": {0: "batch"}}
            with torch.no_grad():
                torch.onnx.export(
                    Logits().eval(),
                    args,
                    str(out / MODEL_FILE),
                    input_names=list(INPUTS),
                    output_names=["logits"],
                    dynamic_axes=axes,
                    opset_version=OPSET,
                    dynamo=False,
                )
    except (RuntimeError, ValueError, TypeError, AttributeError, OSError) as e:
        raise ModelLoadError(f"ONNX export of the verifier failed: {e}") from e
    np.save(out / REFERENCE_FILE, reference, allow_pickle=False)
    quantize_matmuls(out / MODEL_FILE, out / INT8_MODEL_FILE)
    from semcache.embedders.onnx import cpu_session, runtime_errors

    try:
        int8 = cpu_session(out / INT8_MODEL_FILE, 1)
        int8_reference = _run(int8, tok, list(PROBE_PAIRS))
    except runtime_errors(OSError) as e:
        raise ModelLoadError(f"the int8 verifier in {out} does not run: {e}") from e
    np.save(out / INT8_REFERENCE_FILE, int8_reference, allow_pickle=False)
    return {
        "format": VERIFIER_EXPORT_FORMAT,
        "adapter": adapter.sha256,
        "name": adapter.name,
        "max_length": max_length,
        "opset": OPSET,
        "torch_version": str(torch.__version__),
        "export_seconds": round(time.perf_counter() - started, 3),
        "sha256": {n: file_sha256(out / n) for n in DIGESTED},
    }


_ATTR = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def _run(session: Any, tokenizer: Any, pairs: list[tuple[str, str]]) -> NDArray[np.float32]:
    """Probabilities of one batch of pairs (the session's and tokenizer's errors propagate)."""
    one = len(pairs) == 1  # encode() skips the batch machinery
    encodings = [tokenizer.encode(*pairs[0])] if one else tokenizer.encode_batch(pairs)
    feed = {n: np.array([getattr(e, _ATTR[n]) for e in encodings], dtype=np.int64) for n in INPUTS}
    (logits,) = session.run(["logits"], feed)
    out: NDArray[np.float32] = (1.0 / (1.0 + np.exp(-np.asarray(logits).reshape(-1)))).astype(
        np.float32
    )
    return out


def _torch_probabilities(cross: Any, pairs: list[tuple[str, str]]) -> NDArray[np.float32]:
    import torch
    from sentence_transformers.util import batch_to_device

    with torch.inference_mode():
        features = batch_to_device(cross.preprocess(pairs), cross.model.device)
        logits = cross(features)["scores"].view(-1)
        return torch.sigmoid(logits.float()).cpu().numpy().astype(np.float32)


class OnnxPairScorer:
    """Scores (query, cached prompt) pairs with the exported verifier on ONNX Runtime.

    Raises :class:`MissingDependencyError` without onnxruntime and :class:`ModelLoadError` when
    the export fails, was altered, or disagrees with torch on the probe pairs.
    """

    def __init__(
        self,
        adapter: Adapter,
        *,
        max_length: int = 128,
        threads: int = 1,
        cache_dir: Path | str | None = None,
        int8: bool = False,
    ) -> None:
        try:
            import onnxruntime  # noqa: F401  (a missing runtime is a clear error here)
            from tokenizers import Tokenizer
        except ImportError as e:
            raise MissingDependencyError(e.name or "onnxruntime", "onnx") from e
        from semcache.embedders.onnx import cpu_session, runtime_errors

        check_cross_encoder(adapter)
        self._errors = runtime_errors(TypeError)
        model, reference_file = (
            (INT8_MODEL_FILE, INT8_REFERENCE_FILE) if int8 else (MODEL_FILE, REFERENCE_FILE)
        )
        self.directory = ensure_verifier_export(
            adapter,
            max_length=max_length,
            cache_dir=cache_dir,
            files=(model, TOKENIZER_FILE, reference_file),
        )
        self.int8 = int8
        try:
            self._session = cpu_session(self.directory / model, threads)
            self._tokenizer = Tokenizer.from_file(str(self.directory / TOKENIZER_FILE))
        except runtime_errors(OSError) as e:
            raise ModelLoadError(f"cannot load the verifier export {self.directory}: {e}") from e
        reference = np.load(self.directory / reference_file, allow_pickle=False)
        gap = float(np.abs(self.probabilities(list(PROBE_PAIRS)) - reference).max())
        if gap > MAX_PROBE_GAP:
            raise ModelLoadError(
                f"the ONNX verifier {self.directory / model} differs from its export-time "
                f"probabilities by {gap:.5f} (> {MAX_PROBE_GAP}) on a probe pair; delete it"
            )
        self.agreement = gap

    def probabilities(
        self, pairs: list[tuple[str, str]], batch_size: int = 64
    ) -> NDArray[np.float32]:
        """The verifier's probability for each (query, cached prompt) pair."""
        try:
            return _in_batches(pairs, batch_size, lambda c: _run(self._session, self._tokenizer, c))
        except self._errors as e:
            from semcache.errors import GuardError

            raise GuardError(f"the ONNX verifier failed: {e}") from e


class TorchPairScorer:
    """Scores pairs with a sentence-transformers ``CrossEncoder`` on torch (no ONNX Runtime):
    the sigmoid of its logits, batch by batch, without ``predict``'s per-call overhead."""

    def __init__(self, model: Any) -> None:
        self.model = model

    @classmethod
    def from_adapter(
        cls, adapter: Adapter, *, max_length: int = 128, threads: int = 1
    ) -> TorchPairScorer:
        """The adapter merged into the packaged MiniLM; ``threads``: torch's (process-wide)."""
        import torch

        torch.set_num_threads(threads)
        return cls(torch_cross_encoder(adapter, max_length))

    def probabilities(
        self, pairs: list[tuple[str, str]], batch_size: int = 64
    ) -> NDArray[np.float32]:
        """The model's probability for each pair."""
        return _in_batches(pairs, batch_size, lambda c: _torch_probabilities(self.model, c))


def pair_scorer(
    adapter: Adapter,
    *,
    what: str,
    max_length: int = 128,
    prefer_onnx: bool = True,
    int8: bool = True,
    threads: int = 1,
    cache_dir: Path | str | None = None,
) -> OnnxPairScorer | TorchPairScorer:
    """A cross-encoder adapter's scorer: :class:`OnnxPairScorer` (``int8``: the export's int8
    copy) when ONNX Runtime works here, else :class:`TorchPairScorer` with a warning naming
    ``what`` and why. An adapter without a classification head fails first, either way."""
    check_cross_encoder(adapter)
    if prefer_onnx:
        try:
            return OnnxPairScorer(
                adapter, max_length=max_length, threads=threads, cache_dir=cache_dir, int8=int8
            )
        except (MissingDependencyError, ModelLoadError) as e:
            log.warning("semcache: ONNX %s unavailable (%s); falling back to torch", what, e)
    return TorchPairScorer.from_adapter(adapter, max_length=max_length, threads=threads)


def _in_batches(
    pairs: list[tuple[str, str]],
    batch_size: int,
    run: Callable[[list[tuple[str, str]]], NDArray[np.float32]],
) -> NDArray[np.float32]:
    out = np.empty(len(pairs), dtype=np.float32)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        out[start : start + len(chunk)] = run(chunk)
    return out
