"""The export file format: JSON lines, a header then one entry per line. Pure, no I/O.

The header names the format and its version and the embedding model that made the vectors::

    {"format": "semcache-entries", "version": 1, "fingerprint": {...}, "vectors": true, ...}
    {"prompt": "...", "response": ..., "scope_key": "...", "tenant": "acme", ..., "vector": "..."}

A vector is its float32 bytes (little-endian) in base64; it is absent when exported without
vectors. Every line is checked by :func:`read_header` and :func:`read_record`; anything else is
an :class:`ImportFormatError` naming the line. Payloads are JSON values, never pickled.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.errors import ImportFormatError, SemcacheError
from semcache.keys import text_key
from semcache.models import Entry, ModelFingerprint, NewEntry
from semcache.selector import check_tags

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "FORMAT",
    "VERSION",
    "Header",
    "Record",
    "header_line",
    "read_header",
    "read_record",
    "record_line",
]

FORMAT = "semcache-entries"
VERSION = 1
_HEX32 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class Header:
    """The first line: the embedding model and whether the entries carry vectors."""

    fingerprint: ModelFingerprint
    vectors: bool


@dataclass(frozen=True, slots=True)
class Record:
    """One entry read back: ready to store, with its vector if the file had one."""

    entry: NewEntry
    vector: NDArray[np.float32] | None


def header_line(fingerprint: ModelFingerprint, *, vectors: bool, exported_at: float) -> str:
    """The header line (no newline)."""
    return json.dumps(
        {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": fingerprint.to_dict(),
            "vectors": vectors,
            "exported_at": exported_at,
        },
        sort_keys=True,
    )


def _vector_text(vector: NDArray[np.float32]) -> str:
    data = np.ascontiguousarray(vector, dtype="<f4").tobytes()
    return base64.b64encode(data).decode("ascii")


def record_line(entry: Entry, vector: NDArray[np.float32] | None) -> str:
    """One entry's line (no newline); ``vector`` None leaves it out."""
    record: dict[str, Any] = {
        "prompt": entry.prompt,
        "response": entry.response,
        "metadata": dict(entry.metadata),
        "created_at": entry.created_at,
        "expires_at": entry.expires_at,
        "scope_key": entry.scope_key,
        "tenant": entry.tenant,
        "model": entry.model,
        "namespace": entry.namespace,
        "tags": list(entry.tags),
    }
    if vector is not None:
        record["vector"] = _vector_text(vector)
    return json.dumps(record, ensure_ascii=False, allow_nan=False)


def _object(text: str, line: int) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ImportFormatError(f"line {line} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ImportFormatError(f"line {line} is a JSON {type(value).__name__}, not an object")
    return value


def read_header(text: str) -> Header:
    """The header of an export file, or :class:`ImportFormatError` if it is not one we read."""
    if not text.strip():
        raise ImportFormatError("the file is empty: not a semcache export")
    data = _object(text, 1)
    if data.get("format") != FORMAT:
        raise ImportFormatError(
            f"not a semcache export (line 1 has format {data.get('format')!r}, expected {FORMAT!r})"
        )
    if data.get("version") != VERSION:
        raise ImportFormatError(
            f"export format version {data.get('version')!r}; this semcache reads {VERSION}"
        )
    try:
        fingerprint = ModelFingerprint.from_dict(data["fingerprint"])
    except (KeyError, TypeError, ValueError) as e:
        raise ImportFormatError(f"line 1 has no readable embedder fingerprint ({e})") from None
    if fingerprint.dim < 1:
        raise ImportFormatError(f"line 1 gives a vector size of {fingerprint.dim}")
    return Header(fingerprint, bool(data.get("vectors", False)))


def _string(data: dict[str, Any], name: str, line: int, default: str | None = None) -> str:
    value = data.get(name, default)
    if not isinstance(value, str):
        raise ImportFormatError(f"line {line}: {name} must be a string, got {value!r:.60}")
    return value


def _time(value: Any, name: str, line: int, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ImportFormatError(f"line {line}: {name} must be a number, got {value!r:.60}")
    return float(value)


def _vector(value: Any, dim: int, line: int) -> NDArray[np.float32]:
    if not isinstance(value, str):
        raise ImportFormatError(f"line {line}: vector must be base64 text")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImportFormatError(f"line {line}: vector is not base64 ({e})") from None
    if len(data) != 4 * dim:
        raise ImportFormatError(
            f"line {line}: vector has {len(data)} bytes; the header's model makes {dim}-d vectors"
        )
    vector = np.frombuffer(data, dtype="<f4").astype(np.float32)
    norm = float(np.linalg.norm(vector)) if np.isfinite(vector).all() else math.nan
    if not abs(norm - 1.0) <= 1e-3:
        raise ImportFormatError(f"line {line}: vector is not a finite unit vector")
    return vector


def read_record(text: str, line: int, header: Header) -> Record:
    """One entry line, fully checked; :class:`ImportFormatError` names the line otherwise."""
    data = _object(text, line)
    prompt = _string(data, "prompt", line)
    if not prompt:
        raise ImportFormatError(f"line {line}: prompt is empty")
    scope_key = _string(data, "scope_key", line)
    if not _HEX32.fullmatch(scope_key):
        raise ImportFormatError(f"line {line}: scope_key is not a semcache scope key")
    if "response" not in data:
        raise ImportFormatError(f"line {line}: no response")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ImportFormatError(f"line {line}: metadata must be an object")
    created = _time(data.get("created_at"), "created_at", line, optional=False)
    assert created is not None
    expires = _time(data.get("expires_at"), "expires_at", line, optional=True)
    try:
        tags = check_tags(data.get("tags", []))
    except SemcacheError as e:
        raise ImportFormatError(f"line {line}: {e}") from None
    vector = None
    if "vector" in data:
        vector = _vector(data["vector"], header.fingerprint.dim, line)
    entry = NewEntry(
        scope_key=scope_key,
        text_key=text_key(prompt),
        prompt=prompt,
        response=data["response"],
        created_at=created,
        expires_at=expires,
        metadata=metadata,
        tenant=_string(data, "tenant", line, ""),
        model=_string(data, "model", line, ""),
        namespace=_string(data, "namespace", line, ""),
        tags=tags,
    )
    return Record(entry, vector)
