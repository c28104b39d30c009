"""The BM25 index persisted beside the retrieval store, so a restart does not rebuild it.

One file, ``bm25.npz`` (numpy arrays, read without pickle), with a checksum sidecar
``bm25.npz.sha256`` written by :mod:`semcache.backends.snapshots`. Its ``header`` array holds
JSON: the format version, the :class:`Bm25Params` it was built with, the store's corpus
generation at build time, the document ids and the vocabulary. :func:`load` returns ``None``
(and logs why) for a file that is missing, corrupt, of another format, built with other params
or at another generation: the caller rebuilds from SQLite, never trusting such a file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from semcache.backends import snapshots
from semcache.retrieval.bm25 import Bm25Arrays, Bm25Index, Bm25Params

__all__ = ["FORMAT", "load", "save"]

FORMAT = 1
log = logging.getLogger("semcache")


def save(path: Path, index: Bm25Index, generation: int) -> bool:
    """Write ``index`` (built at corpus ``generation``) to ``path``; ``False`` if it is empty."""
    arrays = index.arrays()
    if arrays is None:
        snapshots.remove(path)
        return False
    header = {
        "format": FORMAT,
        "params": dataclasses.asdict(index.params),
        "generation": generation,
        "ids": arrays.ids,
        "vocab": arrays.vocab,
    }
    blob = np.frombuffer(json.dumps(header, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, header=blob, data=arrays.data, indices=arrays.indices, indptr=arrays.indptr)

    snapshots.write(path, write)
    return True


def load(path: Path, params: Bm25Params, generation: int) -> Bm25Index | None:
    """The index saved at ``path`` if it is intact and current, else ``None`` (logged)."""
    if not snapshots.verified(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode("utf-8"))
            data, indices, indptr = z["data"], z["indices"], z["indptr"]
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as e:
        log.warning("semcache: cannot read BM25 index %s (%s); rebuilding it from SQLite", path, e)
        return None
    stale = _stale(header, params, generation)
    if stale:
        log.info("semcache: BM25 index %s %s; rebuilding it from SQLite", path, stale)
        return None
    index = Bm25Index(params)
    try:
        index.restore(
            Bm25Arrays(
                ids=list(header["ids"]),
                vocab=dict(header["vocab"]),
                data=data,
                indices=indices,
                indptr=indptr,
            )
        )
    except (ValueError, TypeError) as e:
        log.warning("semcache: BM25 index %s is inconsistent (%s); rebuilding it", path, e)
        return None
    return index


def _stale(header: object, params: Bm25Params, generation: int) -> str:
    """Why a readable file cannot be used (``""``: it can)."""
    if not isinstance(header, dict):
        return "has no header"
    if header.get("format") != FORMAT:
        return f"has format {header.get('format')!r}, not {FORMAT}"
    if header.get("params") != dataclasses.asdict(params):
        return "was built with other BM25 params"
    if header.get("generation") != generation:
        return (
            f"was built at corpus generation {header.get('generation')!r}, "
            f"the store is at {generation}"
        )
    if not isinstance(header.get("ids"), list) or not isinstance(header.get("vocab"), dict):
        return "has a malformed header"
    return ""
