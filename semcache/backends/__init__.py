"""Storage backends. The embedded one is the default; Redis is for many replicas."""

from semcache.backends.base import Backend
from semcache.backends.local import EmbeddedBackend, HnswParams, MemoryBackend

__all__ = ["Backend", "EmbeddedBackend", "HnswParams", "MemoryBackend"]
