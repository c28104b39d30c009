"""Every exception semcache raises.

The tree::

    SemcacheError
    ├── ConfigurationError (ValueError)        a setting is invalid; raised at construction
    │   └── FingerprintMismatchError           the index was built by another embedding model
    ├── InvalidInputError (ValueError)         empty, oversize, non-text, NaN or wrong-dims input
    │   └── ImportFormatError                  an export file is malformed or of another format
    ├── GuardError                             a guard, the verifier or learned thresholds failed
    ├── EmbeddingError                         the embedder failed on an input
    │   └── ModelLoadError                     the model cannot be loaded (offline, missing files)
    │       └── AdapterError                   an adapter file is missing, altered or mismatched
    ├── BackendError                           the storage backend failed
    │   ├── BackendUnavailableError            it cannot be reached (or its circuit is open)
    │   │   └── LookupTimeoutError             a lookup ran past its time budget
    │   └── CorruptEntryError                  a stored entry cannot be decoded
    ├── NotCacheableError                      a response must not be stored (error, truncated, ...)
    └── MissingDependencyError (ImportError)   an optional extra is not installed
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "BackendError",
    "BackendUnavailableError",
    "ConfigurationError",
    "CorruptEntryError",
    "EmbeddingError",
    "FingerprintMismatchError",
    "GuardError",
    "ImportFormatError",
    "InvalidInputError",
    "LookupTimeoutError",
    "MissingDependencyError",
    "ModelLoadError",
    "NotCacheableError",
    "SemcacheError",
]


class SemcacheError(Exception):
    """Base class of every semcache error."""


class ConfigurationError(SemcacheError, ValueError):
    """A setting is invalid. Raised when a component is built, never mid-request."""


class FingerprintMismatchError(ConfigurationError):
    """The stored index was built with a different embedding model, dimension or normalisation."""


class InvalidInputError(SemcacheError, ValueError):
    """An input cannot be cached: empty, too long, not text, or a malformed vector."""


class ImportFormatError(InvalidInputError):
    """An export file cannot be imported: malformed, truncated, or not a semcache export."""


class GuardError(SemcacheError):
    """A guard, the verifier or the learned thresholds raised while deciding on a candidate."""


class EmbeddingError(SemcacheError):
    """The embedder failed."""


class ModelLoadError(EmbeddingError):
    """The embedding model could not be loaded."""


class AdapterError(ModelLoadError):
    """An adapter file (LoRA weights on a packaged model) is missing, altered or mismatched."""


class BackendError(SemcacheError):
    """The storage backend failed."""


class BackendUnavailableError(BackendError):
    """The backend cannot be reached, or its circuit breaker is open."""


class LookupTimeoutError(BackendUnavailableError):
    """A lookup's steps (exact tier, embedding, search) took longer than its time budget.

    A kind of :class:`BackendUnavailableError`: the cache could not answer in time, so the call
    goes upstream, and a path that looks up and stores in one call skips the store (it would
    wait the same way).
    """


class CorruptEntryError(BackendError):
    """A stored entry could not be decoded. ``entry_id`` names it when known."""

    def __init__(self, message: str, *, entry_id: str | None = None) -> None:
        super().__init__(message)
        self.entry_id = entry_id


class NotCacheableError(SemcacheError):
    """A response is not eligible for storage (an error, empty, truncated, a tool call, not
    JSON, too large). ``reason`` names the refusal (``"not_serialisable"``, ``"too_large"``)."""

    def __init__(self, message: str, *, reason: str = "not_serialisable") -> None:
        super().__init__(message)
        self.reason = reason


class MissingDependencyError(SemcacheError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package!r} is required for this feature: pip install 'semcache-middleware[{extra}]'"
        )
        self.package = package
        self.extra = extra
