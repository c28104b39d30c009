"""Export a backend's entries to a JSONL file, and import such a file into a backend.

An import reads and checks the whole file before it writes anything: a malformed line, another
format or a vector of the wrong size stops it with :class:`ImportFormatError` and nothing is
stored. Entries expired by then are skipped. The vectors in the file are used as they are when
they were made by the target store's embedding model; otherwise (another model, or a file
exported without vectors) the prompts are embedded again by the embedder given.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from semcache._clock import SystemClock
from semcache.errors import ConfigurationError, ImportFormatError
from semcache.ops import jsonl
from semcache.ops.listing import iter_entries
from semcache.selector import Selector

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from semcache.backends.base import Backend
    from semcache.embedders.base import Embedder
    from semcache.models import ModelFingerprint

__all__ = ["ExportReport", "ImportReport", "export_entries", "import_entries", "read_export"]

#: Entries embedded, then stored, per batch: a Redis write of a batch inserts each vector in
#: the server's HNSW graph, and must fit the client's socket timeout (0.5 s by default).
BATCH = 50


@dataclass(frozen=True, slots=True)
class ExportReport:
    """What :func:`export_entries` wrote: entries, and expired ones left out."""

    exported: int
    skipped_expired: int


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What :func:`import_entries` did.

    Attributes:
        imported: entries stored (each replaces an entry of the same scope and text).
        reembedded: of those, how many were embedded again (another model, or no vector).
        skipped_expired: entries of the file already expired, not stored.
    """

    imported: int
    reembedded: int
    skipped_expired: int


def export_entries(
    backend: Backend,
    fingerprint: ModelFingerprint,
    dest: str | Path | TextIO,
    *,
    selector: Selector | None = None,
    vectors: bool = True,
    now: float | None = None,
) -> ExportReport:
    """Write the selected live entries of ``backend`` (bound to ``fingerprint``) as JSONL.

    A path is written through a temporary file renamed into place, so a failed export leaves
    no partial file.
    """
    now = SystemClock().now() if now is None else now
    if not isinstance(dest, str | Path):
        return _write(backend, fingerprint, dest, selector, vectors, now)
    path = Path(dest)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            report = _write(backend, fingerprint, out, selector, vectors, now)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return report


def _write(
    backend: Backend,
    fingerprint: ModelFingerprint,
    out: TextIO,
    selector: Selector | None,
    vectors: bool,
    now: float,
) -> ExportReport:
    out.write(jsonl.header_line(fingerprint, vectors=vectors, exported_at=now) + "\n")
    exported = expired = 0
    for entry, vector in iter_entries(backend, selector, vectors=vectors):
        if entry.expired(now):
            expired += 1
            continue
        out.write(jsonl.record_line(entry, vector) + "\n")
        exported += 1
    return ExportReport(exported, expired)


def _lines(source: str | Path | TextIO) -> Iterator[str]:
    if isinstance(source, str | Path):
        try:
            with open(source, encoding="utf-8") as f:
                yield from f
        except UnicodeDecodeError as e:
            raise ImportFormatError(f"{source} is not UTF-8 text: {e}") from None
    else:
        yield from source


def read_export(
    source: str | Path | TextIO,
) -> tuple[jsonl.Header, list[jsonl.Record]]:
    """The header and every record of an export file, all checked (nothing is stored)."""
    lines = _lines(source)
    header = jsonl.read_header(next(lines, ""))
    records = [
        jsonl.read_record(text, number, header)
        for number, text in enumerate(lines, start=2)
        if text.strip()
    ]
    return header, records


def import_entries(
    source: str | Path | TextIO,
    backend: Backend,
    *,
    embedder: Embedder | None = None,
    now: float | None = None,
    progress: bool | None = None,
) -> ImportReport:
    """Store the live entries of an export file in ``backend``.

    Args:
        source: the file (path or open text stream).
        backend: the target; bound here to ``embedder``'s model, or, without one, to the model
            the target already holds or else the file's.
        embedder: re-embeds prompts whose vectors cannot be used (another model, or none in
            the file); required only then, and must be the target's model.
        now: the time expiry is judged at (default: the system clock).
        progress: show a progress bar on stderr; ``None``: only when stderr is a terminal.

    Raises:
        ImportFormatError: the file is malformed or not a semcache export (nothing stored).
        ConfigurationError: re-embedding is needed and no embedder was given.
        FingerprintMismatchError: the target was built by another model than ``embedder``.
    """
    header, records = read_export(source)
    now = SystemClock().now() if now is None else now
    live = [r for r in records if r.entry.expires_at is None or r.entry.expires_at > now]
    target = embedder.fingerprint if embedder is not None else header.fingerprint
    same_model = header.fingerprint.key() == target.key()
    stale = [i for i, r in enumerate(live) if r.vector is None or not same_model]
    if stale and embedder is None:  # before bind: a refused import leaves the target untouched
        raise ConfigurationError(
            f"{len(stale)} entries need embedding again (the file's vectors were made by "
            f"{header.fingerprint.key()!r} or are absent): give an embedder of the target's model"
        )
    backend.bind(target)
    vectors: list[NDArray[np.float32] | None] = [r.vector if same_model else None for r in live]
    show = sys.stderr.isatty() if progress is None else progress
    with _bar(len(stale) + len(live), show) as bar:  # embedding, then storing
        if embedder is not None:
            for batch in _chunks(stale, BATCH):
                embedded = embedder.embed([live[i].entry.prompt for i in batch])
                for i, vector in zip(batch, embedded, strict=True):
                    vectors[i] = vector
                bar.update(len(batch))
        for batch in _chunks(list(range(len(live))), BATCH):
            ready = [v for i in batch if (v := vectors[i]) is not None]
            backend.put_many([live[i].entry for i in batch], ready)
            bar.update(len(batch))
    return ImportReport(len(live), len(stale), len(records) - len(live))


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Progress(Protocol):
    def update(self, n: float) -> object: ...

    def __enter__(self) -> _Progress: ...

    def __exit__(self, *exc: object) -> object: ...


class _NoBar:
    def update(self, n: float) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _bar(total: int, show: bool) -> _Progress:
    """A tqdm bar on stderr if ``show``, else one that shows nothing."""
    if not show:
        return _NoBar()
    from tqdm import tqdm

    bar: _Progress = tqdm(total=total, unit="entry", desc="semcache import", file=sys.stderr)
    return bar
