"""Connecting to Redis: timeouts, pool size, TLS, and URLs that never leak their password."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from semcache.errors import ConfigurationError

__all__ = ["RedisConnection", "check_url", "make_async_client", "make_client", "redact"]

_URL = re.compile(r"(?:redis|rediss|unix)://", re.IGNORECASE)


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisConnection:
    """How the backend talks to Redis.

    Attributes:
        socket_timeout: seconds any one command may take before it counts as a failure.
        connect_timeout: seconds to establish a connection.
        max_connections: size of the connection pool.
        ssl_ca_certs: CA bundle for ``rediss://`` URLs (the system store if ``None``).
        health_check_interval: seconds of idleness after which a pooled connection is PINGed.
    """

    socket_timeout: float = 0.5
    connect_timeout: float = 0.5
    max_connections: int = 64
    ssl_ca_certs: str | None = None
    health_check_interval: int = 30

    def __post_init__(self) -> None:
        for name in ("socket_timeout", "connect_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and 0 < value <= 60):
                raise ConfigurationError(
                    f"RedisConnection.{name} must be in (0, 60] seconds, got {value!r}"
                )
        if not 1 <= self.max_connections <= 10_000:
            raise ConfigurationError(
                f"RedisConnection.max_connections must be in 1..10000, got {self.max_connections}"
            )
        if self.health_check_interval < 0:
            raise ConfigurationError(
                f"RedisConnection.health_check_interval must be >= 0, got "
                f"{self.health_check_interval}"
            )


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)


def check_url(url: str) -> None:
    if not isinstance(url, str) or not _URL.match(url):
        shown = redact(url) if isinstance(url, str) else type(url).__name__
        raise ConfigurationError(
            f"a Redis URL starts with redis://, rediss:// or unix://, got {shown!r}"
        )


def make_client(url: str, connection: RedisConnection) -> Any:
    """A ``redis.Redis`` (bytes responses) with timeouts and one immediate retry, no backoff."""
    import redis
    from redis.retry import Retry

    return redis.Redis.from_url(url, **_options(url, connection, Retry))


def make_async_client(url: str, connection: RedisConnection) -> Any:
    """A ``redis.asyncio.Redis`` with the same settings as :func:`make_client`."""
    import redis.asyncio
    from redis.asyncio.retry import Retry

    return redis.asyncio.Redis.from_url(url, **_options(url, connection, Retry))


def _options(url: str, connection: RedisConnection, retry: Any) -> dict[str, Any]:
    from redis.backoff import NoBackoff

    extra: dict[str, Any] = {}
    if url.lower().startswith("rediss://") and connection.ssl_ca_certs:
        extra["ssl_ca_certs"] = connection.ssl_ca_certs
    return {
        "socket_timeout": connection.socket_timeout,
        "socket_connect_timeout": connection.connect_timeout,
        "max_connections": connection.max_connections,
        "health_check_interval": connection.health_check_interval,
        "retry": retry(NoBackoff(), 1),  # one immediate retry: a stale pooled connection
        "decode_responses": False,
        **extra,
    }
