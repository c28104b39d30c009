"""Partition keys and exact-match text keys: pure functions, no I/O.

A :class:`Scope` names everything that must match for a cached answer to be served: the model,
the generation parameters, the system prompt, the tools and the tenant. Two requests in different
scopes never see each other's entries, in any backend.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from semcache.errors import InvalidInputError

__all__ = ["Scope", "canonical_json", "normalize_text", "text_key"]

_WS = re.compile(r"\s+")
_END = re.compile(r"[\s?!.]+$")


_NUMERIC = frozenset({"No", "Nl"})  # superscripts, fractions, circled and roman numerals...


def _compatible(text: str) -> str:
    """NFKC, except for characters that carry a number: folding those would make ``10³``
    the same text as ``103`` (and ``½`` as ``12``), and the exact tier has no guard."""
    if text.isascii():
        return text
    kept = "".join(
        c if unicodedata.category(c) in _NUMERIC else unicodedata.normalize("NFKC", c)
        for c in unicodedata.normalize("NFC", text)
    )
    return unicodedata.normalize("NFC", kept)


def normalize_text(text: str) -> str:
    """The form compared by the exact tier: compatibility-folded (numbers excepted), case-folded,
    whitespace collapsed, trimmed, and trailing ``?``, ``!`` and ``.`` dropped (punctuation
    elsewhere is kept)."""
    folded = _WS.sub(" ", _compatible(text)).strip().casefold()
    return _END.sub("", folded) or folded


def _digest(text: str) -> str:
    # surrogatepass: any str hashes, a lone surrogate included (it cannot be UTF-8 encoded)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def text_key(text: str) -> str:
    """A 128-bit hex digest of :func:`normalize_text` (the exact tier's key)."""
    return _digest(normalize_text(text))


def _canonical(value: Any) -> Any:
    """Make a value JSON-stable: integral floats become ints, mappings sorted, tuples lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"non-finite number in a cache key: {value}")
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_canonical(v) for v in value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return _canonical(dump(mode="json"))
    raise InvalidInputError(f"cannot use a {type(value).__name__} in a cache key")


def canonical_json(value: Any) -> str:
    """Deterministic JSON for hashing (sorted keys, no spaces, ``0.0 == 0``).

    Raises :class:`InvalidInputError` for what cannot be keyed: a circular or too deeply nested
    value, a number too long to print, a type with no JSON form.
    """
    try:
        return json.dumps(
            _canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    except InvalidInputError:
        raise
    except RecursionError:
        raise InvalidInputError("a cache key value is circular or nested too deeply") from None
    except ValueError as e:  # e.g. an integer longer than Python will print
        raise InvalidInputError(f"cannot use this value in a cache key: {e}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Scope:
    """The hard partition of a request. Entries are only ever served within one scope.

    Attributes:
        model: the LLM (or chain) that produced the answer.
        params: generation parameters that change the answer (temperature, max_tokens, ...).
        system: the system prompt, or any fixed instructions.
        tools: tool / function definitions offered to the model.
        tenant: the user, key or team whose data must not leak to others.
        namespace: a free label to separate applications sharing one store.
    """

    model: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    system: str = ""
    tools: Any = None
    tenant: str = ""
    namespace: str = ""

    def key(self) -> str:
        """A 128-bit hex digest of every field; equal scopes give equal keys."""
        payload = canonical_json(
            {
                "v": 1,
                "model": self.model,
                "params": dict(self.params),
                "system": self.system,
                "tools": self.tools,
                "tenant": self.tenant,
                "namespace": self.namespace,
            }
        )
        return _digest(payload)
