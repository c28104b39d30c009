"""Operator commands: ``stats``, ``entries``, ``export``, ``import``, ``clear``, ``purge-expired``.

Each takes a store: a cache directory (embedded backend) or a Redis URL (``--name`` picks the
cache). Library logic lives in :mod:`semcache.ops`; this module parses, prints and turns a
semcache error or a file error into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from semcache.errors import ConfigurationError, SemcacheError

if TYPE_CHECKING:
    from semcache.backends.base import Backend
    from semcache.models import Entry, ModelFingerprint
    from semcache.selector import Selector

__all__ = ["register"]

STORE_HELP = "a cache directory, or a Redis URL (redis://host:port/db)"


def register(subparsers: Any) -> None:
    """Add the six operator subcommands."""
    p = _command(subparsers, "stats", "summarise a store: entries by tenant, model, tag", _stats)
    _store(p)
    _filters(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = _command(subparsers, "entries", "list or inspect entries", _entries)
    _store(p)
    _filters(p)
    p.add_argument("--limit", type=_positive, default=20, help="most entries shown (20)")
    p.add_argument("--id", dest="entry_id", default=None, help="show this entry in full")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = _command(subparsers, "export", "write entries to a JSONL file (a backup)", _export)
    _store(p)
    p.add_argument("file", help="the JSONL file to write ('-': standard output)")
    _filters(p)
    p.add_argument("--no-vectors", action="store_true", help="leave vectors out (smaller)")

    p = _command(subparsers, "import", "store the entries of an export file", _import)
    p.add_argument("file", help="a JSONL file written by 'semcache export'")
    _store(p)
    p.add_argument(
        "--model",
        default=None,
        help="embedding model to re-embed with when the file's vectors cannot be used "
        "(another model, or exported without vectors); the packaged model gets the shipped "
        "adapter unless --untuned",
    )
    p.add_argument("--untuned", action="store_true", help="re-embed with the plain packaged model")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)

    p = _command(subparsers, "clear", "delete entries by tenant, model, namespace or tag", _clear)
    _store(p)
    _filters(p)
    p.add_argument("--all", action="store_true", help="with no filter: delete every entry")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    p = _command(subparsers, "purge-expired", "delete expired entries now", _purge)
    _store(p)


def _command(
    subparsers: Any, name: str, summary: str, run: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=summary, description=summary[0].upper() + summary[1:] + "."
    )
    parser.set_defaults(func=_guarded(run))
    return parser


def _store(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help=STORE_HELP)
    p.add_argument("--name", default="default", help="the Redis cache name (default)")


def _filters(p: argparse.ArgumentParser) -> None:
    for label in ("tenant", "model", "namespace", "tag"):
        p.add_argument(f"--{label}", default=None, help=f"only entries with this {label}")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``run`` with semcache and file errors printed as one line (exit status 2)."""

    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (SemcacheError, OSError) as e:
            message = " ".join(str(e).split()) or type(e).__name__
            print(f"semcache {args.command}: error: {message}", file=sys.stderr)
            return 2

    return guarded


def _selector(args: argparse.Namespace) -> Selector:
    from semcache.selector import Selector

    return Selector(tenant=args.tenant, model=args.model, namespace=args.namespace, tag=args.tag)


@contextmanager
def _opened(args: argparse.Namespace, *, create: bool = False) -> Iterator[Backend]:
    from semcache.ops import open_store

    backend = open_store(args.store, name=args.name, create=create)
    try:
        yield backend
    finally:
        backend.close()


def _bound(backend: Backend, args: argparse.Namespace) -> ModelFingerprint:
    from semcache.ops import stored_fingerprint

    fingerprint = stored_fingerprint(backend)
    if fingerprint is None:
        raise ConfigurationError(f"{args.store} holds no cache yet (nothing was ever stored)")
    return fingerprint


def _now() -> float:
    from semcache._clock import SystemClock

    return SystemClock().now()


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


# -- commands ----------------------------------------------------------------------------------


def _stats(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from semcache.backends.embedded import LocalBackend
    from semcache.ops import summarize

    with _opened(args) as backend:
        fingerprint = _bound(backend, args)
        summary = summarize(backend, _now(), _selector(args))
        store = asdict(backend.stats()) if isinstance(backend, LocalBackend) else {}
    if args.json:
        data = {"model": fingerprint.key(), **asdict(summary), "store": store}
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    print(f"store:      {args.store}")
    print(f"embedder:   {fingerprint.key()}")
    print(f"entries:    {summary.entries} ({summary.expired} expired, not yet purged)")
    print(f"scopes:     {summary.scopes}")
    print(f"created:    {_when(summary.oldest)} .. {_when(summary.newest)}")
    if store:
        print(f"bytes:      {store['stored_bytes']}")
    for title, counts in (
        ("tenants", summary.tenants),
        ("models", summary.models),
        ("namespaces", summary.namespaces),
        ("tags", summary.tags),
    ):
        shown = ", ".join(f"{k or '(none)'}: {n}" for k, n in list(counts.items())[:10])
        more = f" (+{len(counts) - 10} more)" if len(counts) > 10 else ""
        print(f"{title + ':':<11} {shown or '-'}{more}")
    return 0


def _as_dict(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "prompt": entry.prompt,
        "response": entry.response,
        "tenant": entry.tenant,
        "model": entry.model,
        "namespace": entry.namespace,
        "tags": list(entry.tags),
        "scope_key": entry.scope_key,
        "created_at": entry.created_at,
        "expires_at": entry.expires_at,
        "metadata": dict(entry.metadata),
    }


def _entries(args: argparse.Namespace) -> int:
    from semcache.ops import iter_entries

    with _opened(args) as backend:
        _bound(backend, args)
        if args.entry_id is not None:
            entry = backend.get(args.entry_id)
            if entry is None:
                raise ConfigurationError(f"no entry {args.entry_id!r} in {args.store}")
            print(json.dumps(_as_dict(entry), indent=None if args.json else 2, ensure_ascii=False))
            return 0
        shown = 0
        now = _now()
        for entry, _ in iter_entries(backend, _selector(args), page=min(args.limit, 500)):
            if shown == args.limit:
                break
            shown += 1
            if args.json:
                print(json.dumps(_as_dict(entry), ensure_ascii=False))
                continue
            prompt = " ".join(entry.prompt.split())
            state = " (expired)" if entry.expired(now) else ""
            print(
                f"{entry.id}  {_when(entry.created_at)}{state}  tenant={entry.tenant or '-'} "
                f"model={entry.model or '-'} namespace={entry.namespace or '-'} "
                f"tags={','.join(entry.tags) or '-'}  {prompt[:70]!r}"
            )
    if not args.json:
        print(f"({shown} shown; --limit to see more)" if shown == args.limit else f"({shown})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from semcache.ops import export_entries

    with _opened(args) as backend:
        fingerprint = _bound(backend, args)
        dest = sys.stdout if args.file == "-" else args.file
        report = export_entries(
            backend, fingerprint, dest, selector=_selector(args), vectors=not args.no_vectors
        )
    print(
        f"exported {report.exported} entries ({report.skipped_expired} expired left out)",
        file=sys.stderr,
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    from semcache.ops import import_entries

    embedder = None
    if args.model is not None or args.untuned:
        from semcache.embedders.base import DEFAULT_MODEL
        from semcache.embedders.default import default_embedder

        embedder = default_embedder(
            model=args.model or DEFAULT_MODEL, threads=1, tuned=False if args.untuned else None
        )
    with _opened(args, create=True) as backend:
        report = import_entries(args.file, backend, embedder=embedder, progress=args.progress)
    print(
        f"imported {report.imported} entries ({report.reembedded} embedded again, "
        f"{report.skipped_expired} expired left out)",
        file=sys.stderr,
    )
    return 0


def _clear(args: argparse.Namespace) -> int:
    from semcache.ops import iter_entries

    selector = _selector(args)
    if selector.empty and not args.all:
        raise ConfigurationError("give --tenant, --model, --namespace or --tag, or --all")
    with _opened(args) as backend:
        _bound(backend, args)
        if not args.yes:
            n = sum(1 for _ in iter_entries(backend, selector))
            if not _confirm(f"delete {n} entries ({selector.describe()}) from {args.store}?"):
                print("nothing deleted", file=sys.stderr)
                return 1
        deleted = backend.clear(None) if selector.empty else backend.delete_where(selector)
    print(f"deleted {deleted} entries ({selector.describe()})")
    return 0


def _confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _purge(args: argparse.Namespace) -> int:
    with _opened(args) as backend:
        _bound(backend, args)
        print(f"purged {backend.purge_expired(_now())} expired entries")
    return 0
