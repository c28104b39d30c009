"""Which entries an operation applies to: the labels stored with each entry, and a selector.

Every entry carries, beside its scope key, the tenant, model and namespace of its
:class:`~semcache.keys.Scope` and the tags given when it was stored. Params, system prompt and
tools stay hashed into the scope key only. A :class:`Selector` picks entries by these labels
(every given field must match), so a tenant can be deleted, listed or exported whatever its
models and parameters. Pure values and checks, no I/O: each backend turns a selector into its
own query (SQL, a RediSearch filter).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from semcache.errors import InvalidInputError

if TYPE_CHECKING:
    from semcache.keys import Scope
    from semcache.models import Entry

__all__ = ["MAX_TAGS", "MAX_TAG_LENGTH", "Selector", "check_tag", "check_tags", "select"]

#: The most tags one entry carries.
MAX_TAGS = 16
#: The longest tag, in characters.
MAX_TAG_LENGTH = 128
# A comma separates tags in a RediSearch TAG field; control characters have no place in a label.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f,]")


def check_tag(tag: object) -> str:
    """``tag`` if it is a valid tag: 1-128 characters, no comma, no control character and no
    surrounding whitespace; else :class:`InvalidInputError`."""
    if (
        not isinstance(tag, str)
        or not tag
        or len(tag) > MAX_TAG_LENGTH
        or tag != tag.strip()
        or _FORBIDDEN.search(tag)
    ):
        raise InvalidInputError(
            f"a tag is 1-{MAX_TAG_LENGTH} characters with no comma, control character or "
            f"surrounding space, got {tag!r}"
        )
    return tag


def check_tags(tags: Iterable[str] | None) -> tuple[str, ...]:
    """Valid tags, deduplicated and sorted (at most :data:`MAX_TAGS`); ``None`` is none."""
    if tags is None:
        return ()
    if isinstance(tags, str | bytes):
        raise InvalidInputError(f"tags is a list of strings, not one string: tags=[{tags!r}]")
    unique = sorted({check_tag(t) for t in tags})
    if len(unique) > MAX_TAGS:
        raise InvalidInputError(f"an entry carries at most {MAX_TAGS} tags, got {len(unique)}")
    return tuple(unique)


@dataclass(frozen=True, slots=True, kw_only=True)
class Selector:
    """Entries whose labels match every given field; an empty selector matches every entry.

    Attributes:
        scope: a scope key (``Scope(...).key()``): one exact partition.
        tenant, model, namespace: the :class:`~semcache.keys.Scope` field of that name.
        tag: one of the entry's tags.
    """

    scope: str | None = None
    tenant: str | None = None
    model: str | None = None
    namespace: str | None = None
    tag: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidInputError(
                    f"a selector's {f.name} is a non-empty string or None, got {value!r}"
                )
        if self.tag is not None:
            check_tag(self.tag)

    @property
    def empty(self) -> bool:
        """Whether every entry matches."""
        return all(getattr(self, f.name) is None for f in fields(self))

    def matches(self, entry: Entry) -> bool:
        """Whether ``entry`` is selected (the reference for every backend's query)."""
        return (
            (self.scope is None or entry.scope_key == self.scope)
            and (self.tenant is None or entry.tenant == self.tenant)
            and (self.model is None or entry.model == self.model)
            and (self.namespace is None or entry.namespace == self.namespace)
            and (self.tag is None or self.tag in entry.tags)
        )

    def describe(self) -> str:
        """The selector for messages: ``tenant='acme', tag='faq'`` or ``every entry``."""
        given = [(f.name, getattr(self, f.name)) for f in fields(self)]
        return ", ".join(f"{name}={value!r}" for name, value in given if value is not None) or (
            "every entry"
        )


def select(
    scope: Scope | None = None,
    *,
    tenant: str | None = None,
    model: str | None = None,
    namespace: str | None = None,
    tag: str | None = None,
) -> Selector:
    """The :class:`Selector` of ``SemanticCache.clear``'s arguments: one scope's key, and labels."""
    return Selector(
        scope=None if scope is None else scope.key(),
        tenant=tenant,
        model=model,
        namespace=namespace,
        tag=tag,
    )
