"""Operating a cache: list its entries, summarise them, export and import them.

These work on any :class:`~semcache.backends.base.Backend` through its paged listing
(``entries``) and bulk write (``put_many``); deletion by label is ``SemanticCache.clear``.
The ``semcache`` command's operator subcommands (:mod:`semcache.cli.operate`) are built on them.
"""

from __future__ import annotations

from semcache.ops.listing import Summary, aiter_entries, iter_entries, summarize
from semcache.ops.stores import open_store, stored_fingerprint
from semcache.ops.transfer import (
    ExportReport,
    ImportReport,
    export_entries,
    import_entries,
    read_export,
)

__all__ = [
    "ExportReport",
    "ImportReport",
    "Summary",
    "aiter_entries",
    "export_entries",
    "import_entries",
    "iter_entries",
    "open_store",
    "read_export",
    "stored_fingerprint",
    "summarize",
]
