"""The Redis backend and the Redis core it shares with the retrieval store.

redis and redisvl are imported when a backend or store is built, not here.
"""

from semcache.backends.redis.backend import RedisBackend
from semcache.backends.redis.connection import RedisConnection
from semcache.backends.redis.core import RedisCore

__all__ = ["RedisBackend", "RedisConnection", "RedisCore"]
