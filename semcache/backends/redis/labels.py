"""The Redis backend's entry labels (tenant, model, namespace, tags): fields, index, filters.

Pure functions, no I/O. Each label is kept twice in an entry's hash: as written (``tenant``,
``model``, ``namespace``, and ``tags`` as a JSON list), read back into the :class:`Entry`; and
as a digest in a TAG field of the search index (``l_tenant``, ..., ``l_tags`` holding one
digest per tag, comma-separated). Queries compare digests, which are lowercase hex: no label
value, whatever its punctuation, case or commas, needs escaping or can break a TAG query, and
``Acme`` and ``acme`` stay different tenants (TAG fields fold case).

An index created before labels existed is extended in place (``FT.ALTER ... SCHEMA ADD``, one
field at a time, see :func:`missing_fields`); entries stored before then carry no labels.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semcache.models import NewEntry
    from semcache.selector import Selector

__all__ = [
    "INDEXED",
    "LABEL_FIELDS",
    "alter_args",
    "digest",
    "fields_of",
    "labels_of",
    "missing_fields",
    "schema_fields",
    "selector_filter",
]

SCOPE_FIELD = "scope"
#: The labels as written, returned with an entry.
LABEL_FIELDS = ("tenant", "model", "namespace", "tags")
#: Each label's indexed digest field.
INDEXED = {name: f"l_{name}" for name in LABEL_FIELDS}


def digest(value: str) -> str:
    """The indexed form of a label value: 128-bit hex, stable across processes."""
    data = value.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def fields_of(entry: NewEntry) -> dict[str, str]:
    """The hash fields holding ``entry``'s labels, written and indexed."""
    out = {
        "tenant": entry.tenant,
        "model": entry.model,
        "namespace": entry.namespace,
        "tags": json.dumps(list(entry.tags), ensure_ascii=False),
    }
    for name in ("tenant", "model", "namespace"):
        out[INDEXED[name]] = digest(getattr(entry, name))
    if entry.tags:
        out[INDEXED["tags"]] = ",".join(digest(t) for t in entry.tags)
    return out


def labels_of(f: Mapping[str, Any], as_text: Any) -> dict[str, Any]:
    """An entry's labels from its hash fields (text keys); absent in entries older than labels.

    Raises ``ValueError`` or ``TypeError`` for unreadable tags (the caller reports the entry).
    """
    tags = json.loads(f["tags"]) if f.get("tags") not in (None, b"", "") else []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise TypeError(f"tags is {tags!r}, not a list of strings")
    return {
        "tenant": as_text(f.get("tenant", "")),
        "model": as_text(f.get("model", "")),
        "namespace": as_text(f.get("namespace", "")),
        "tags": tuple(tags),
    }


def schema_fields() -> list[dict[str, Any]]:
    """The index's label fields, in redisvl's schema form."""
    return [{"name": INDEXED[name], "type": "tag"} for name in LABEL_FIELDS]


def missing_fields(schema: Mapping[str, Any]) -> list[str]:
    """The label fields an existing index (``FT.INFO`` as a redisvl schema dict) lacks."""
    have = {f.get("name") for f in schema.get("fields", [])}
    return [INDEXED[n] for n in LABEL_FIELDS if INDEXED[n] not in have]


def alter_args(index: str, field: str) -> list[str]:
    """The ``FT.ALTER`` command adding one label field to ``index``."""
    return ["FT.ALTER", index, "SCHEMA", "ADD", field, "TAG", "SEPARATOR", ","]


def selector_filter(selector: Selector) -> Any:
    """A redisvl filter matching exactly what ``selector`` matches (an empty one: every entry)."""
    from redisvl.query.filter import FilterExpression, Tag

    terms: list[Any] = []
    if selector.scope is not None:
        terms.append(Tag(SCOPE_FIELD) == selector.scope)
    for name, value in (
        ("tenant", selector.tenant),
        ("model", selector.model),
        ("namespace", selector.namespace),
        ("tags", selector.tag),
    ):
        if value is not None:
            terms.append(Tag(INDEXED[name]) == digest(value))
    if not terms:
        return FilterExpression("*")
    expression = terms[0]
    for term in terms[1:]:
        expression = expression & term
    return expression
