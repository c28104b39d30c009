"""Connecting to Redis: timeouts, pool size, TLS, and URLs that never leak their password."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from semcache.errors import ConfigurationError

__all__ = ["RedisConnection", "check_url", "make_async_client", "make_client", "redact"]

_URL = re.compile(r"(?:redis|rediss|unix)://", re.IGNORECASE)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_QUERY_SECRET = re.compile(r"((?:^|&)(?:password|pass|pwd)=)[^&]*", re.IGNORECASE)
_CERT_REQS = ("required", "optional", "none")


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisConnection:
    """How the backend talks to Redis.

    Attributes:
        socket_timeout: seconds any one command may take before it counts as a failure.
        connect_timeout: seconds to establish a connection.
        max_connections: size of the connection pool; past it, a command waits up to
            ``connect_timeout`` for a free connection.
        ssl_ca_certs: CA bundle for ``rediss://`` URLs (the system store if ``None``).
        ssl_certfile: client certificate (PEM) for mutual TLS with ``rediss://`` URLs.
        ssl_keyfile: the client certificate's private key (PEM), if not in ``ssl_certfile``.
        ssl_cert_reqs: whether the server's certificate must verify: ``"required"`` (default),
            ``"optional"`` or ``"none"`` (no verification, and no host name check: test only).
        health_check_interval: seconds of idleness after which a pooled connection is PINGed.

    The TLS files must exist when this is built; TLS settings with a URL other than
    ``rediss://`` are refused when the client is made (they would be silently ignored).
    """

    socket_timeout: float = 0.5
    connect_timeout: float = 0.5
    max_connections: int = 64
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: Literal["required", "optional", "none"] = "required"
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
        self._check_tls()

    def _check_tls(self) -> None:
        if self.ssl_cert_reqs not in _CERT_REQS:
            raise ConfigurationError(
                f"RedisConnection.ssl_cert_reqs must be one of {_CERT_REQS}, "
                f"got {self.ssl_cert_reqs!r}"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ConfigurationError("RedisConnection.ssl_keyfile needs ssl_certfile")
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and Path(value).is_file()):
                raise ConfigurationError(
                    f"RedisConnection.{name} must name a readable file, got {value!r}"
                )

    @property
    def uses_tls_options(self) -> bool:
        """Whether any TLS setting differs from the default."""
        return (
            self.ssl_ca_certs is not None
            or self.ssl_certfile is not None
            or self.ssl_cert_reqs != "required"
        )


def redact(url: str) -> str:
    """The URL without its password (in the user part or a ``password=`` query), for messages.

    Anything between ``scheme://`` and an ``@`` that the URL parser did not see as the user part
    (a password holding ``/``, ``?`` or ``#``) is hidden too: over-redacting a message is harmless.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:  # not a URL: hide whatever precedes an "@"
        return f"***@{url.rpartition('@')[2]}" if "@" in url else url
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[": show the scheme only
        return f"{scheme.group(0)}***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{host}"
    query = _QUERY_SECRET.sub(r"\1***", parts.query)
    rest = parts.path + (f"?{query}" if query else "")
    if "@" in rest or "@" in parts.fragment:  # an "@" the parser did not take as the user part
        return f"{scheme.group(0)}***@{url.rpartition('@')[2]}"
    return f"{scheme.group(0)}{netloc}{rest}{'#' if parts.fragment else ''}{parts.fragment}"


def check_url(url: str) -> None:
    if not isinstance(url, str) or not _URL.match(url):
        shown = redact(url) if isinstance(url, str) else type(url).__name__
        raise ConfigurationError(
            f"a Redis URL starts with redis://, rediss:// or unix://, got {shown!r}"
        )


def make_client(url: str, connection: RedisConnection) -> Any:
    """A ``redis.Redis`` (bytes responses) with timeouts and one immediate retry, no backoff.

    Its pool is a blocking one: past ``max_connections`` concurrent commands, a command waits up
    to ``connect_timeout`` for a free connection instead of failing at once.
    """
    import redis
    from redis.retry import Retry

    pool = redis.BlockingConnectionPool.from_url(
        url, timeout=connection.connect_timeout, **_options(url, connection, Retry)
    )
    return redis.Redis.from_pool(pool)


def make_async_client(url: str, connection: RedisConnection) -> Any:
    """A ``redis.asyncio.Redis`` with the same settings (and pool) as :func:`make_client`."""
    import redis.asyncio
    from redis.asyncio.retry import Retry

    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, timeout=connection.connect_timeout, **_options(url, connection, Retry)
    )
    return redis.asyncio.Redis.from_pool(pool)


def _options(url: str, connection: RedisConnection, retry: Any) -> dict[str, Any]:
    from redis.backoff import NoBackoff

    extra: dict[str, Any] = {}
    if url.lower().startswith("rediss://"):
        extra = {
            "ssl_ca_certs": connection.ssl_ca_certs,
            "ssl_certfile": connection.ssl_certfile,
            "ssl_keyfile": connection.ssl_keyfile,
            "ssl_cert_reqs": connection.ssl_cert_reqs,
        }
        if connection.ssl_cert_reqs == "none":
            extra["ssl_check_hostname"] = False  # ssl refuses a host name check without one
        extra = {k: v for k, v in extra.items() if v is not None}
    elif connection.uses_tls_options:
        raise ConfigurationError(
            f"TLS settings in RedisConnection need a rediss:// URL, got {redact(url)!r}"
        )
    return {
        "socket_timeout": connection.socket_timeout,
        "socket_connect_timeout": connection.connect_timeout,
        "max_connections": connection.max_connections,
        "health_check_interval": connection.health_check_interval,
        "retry": retry(NoBackoff(), 1),  # one immediate retry: a stale pooled connection
        "decode_responses": False,
        **extra,
    }
