"""Storage backends. The embedded one is the default; Redis is for many replicas."""

from semcache.backends.base import AsyncBackend, Backend
from semcache.backends.embedded import EmbeddedBackend, HnswParams, MemoryBackend
from semcache.backends.eviction import GDSF, LRU, Eviction
from semcache.backends.redis import RedisBackend  # light: redis is imported when one is built

__all__ = [
    "GDSF",
    "LRU",
    "AsyncBackend",
    "Backend",
    "EmbeddedBackend",
    "Eviction",
    "HnswParams",
    "MemoryBackend",
    "RedisBackend",
]
