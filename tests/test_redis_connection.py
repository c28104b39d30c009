"""Connection settings without a server: password redaction and the (mutual) TLS options.

The clients are built exactly as the backend builds them; building one opens no connection, so
the options are read back from the client's connection pool.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from semcache import ConfigurationError
from semcache.backends.redis.connection import (
    RedisConnection,
    check_url,
    make_async_client,
    make_client,
    redact,
)

pytest.importorskip("redis")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:p@ss@host:6379", "redis://user:***@host:6379"),
        ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://u:pa:ss@host/1", "redis://u:***@host/1"),
        ("redis://u:p%40ss@host", "redis://u:***@host"),
        ("rediss://u:x@h:1/2?password=s3cret&db=3", "rediss://u:***@h:1/2?password=***&db=3"),
        ("unix://:pw@/tmp/redis.sock?db=0", "unix://:***@/tmp/redis.sock?db=0"),
        ("unix:///tmp/redis.sock?password=s3cret", "unix:///tmp/redis.sock?password=***"),
        ("redis://user:pa/ss@host", "redis://***@host"),  # "/" ends the parser's user part
        ("redis://user:pa#ss@host", "redis://***@host"),
        ("redis://user:pa?ss@host:1", "redis://***@host:1"),
        ("redis://u:p@[::1]:6379/0", "redis://u:***@[::1]:6379/0"),
        ("redis://[::1", "redis://***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://user@host", "redis://user@host"),
        ("p@ss@host", "***@host"),  # not a URL at all
    ],
)
def test_redact_hides_the_whole_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_messages_never_show_a_password_with_an_at_sign() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_url("http://user:p@ss@host")
    assert "p@ss" not in str(info.value)
    assert "ss@" not in str(info.value)
    from semcache.backends.redis import RedisCore

    core = RedisCore("redis://user:p@ss@127.0.0.1:1/0", label="Redis cache 'x'")
    assert core.where == "Redis cache 'x' at redis://user:***@127.0.0.1:1/0"
    core.close()


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    """Files standing for a CA bundle, a client certificate and its key (never parsed here)."""
    out = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text(f"-----BEGIN {name.upper()}-----\n")
        out[name] = str(path)
    return out


def test_mutual_tls_options_reach_the_clients(pem: dict[str, str]) -> None:
    conn = RedisConnection(
        ssl_ca_certs=pem["ca"],
        ssl_certfile=pem["cert"],
        ssl_keyfile=pem["key"],
        ssl_cert_reqs="required",
    )
    expected = {
        "ssl_ca_certs": pem["ca"],
        "ssl_certfile": pem["cert"],
        "ssl_keyfile": pem["key"],
        "ssl_cert_reqs": "required",
    }
    for make in (make_client, make_async_client):
        client = make("rediss://user:pw@cache.internal:6380/0", conn)
        pool = client.connection_pool
        assert "SSL" in pool.connection_class.__name__
        assert expected.items() <= pool.connection_kwargs.items()
        assert "ssl_check_hostname" not in pool.connection_kwargs  # redis-py's default: on


def test_certificate_checks_can_be_relaxed_only_explicitly(pem: dict[str, str]) -> None:
    kwargs = make_client(
        "rediss://cache.internal:6380", RedisConnection(ssl_cert_reqs="none")
    ).connection_pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == "none"
    assert kwargs["ssl_check_hostname"] is False
    default = make_client("rediss://cache.internal:6380", RedisConnection())
    assert default.connection_pool.connection_kwargs["ssl_cert_reqs"] == "required"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ssl_certfile": "/nonexistent/cert.pem"}, "ssl_certfile must name a readable file"),
        ({"ssl_ca_certs": "/nonexistent/ca.pem"}, "ssl_ca_certs must name a readable file"),
        ({"ssl_cert_reqs": "sometimes"}, "ssl_cert_reqs must be one of"),
        ({"ssl_cert_reqs": None}, "ssl_cert_reqs must be one of"),
    ],
)
def test_bad_tls_settings_are_refused_at_construction(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RedisConnection(**kwargs)  # type: ignore[arg-type]


def test_a_key_needs_its_certificate_and_files_must_exist(
    pem: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="ssl_keyfile needs ssl_certfile"):
        RedisConnection(ssl_keyfile=pem["key"])
    with pytest.raises(ConfigurationError, match="ssl_keyfile must name a readable file"):
        RedisConnection(ssl_certfile=pem["cert"], ssl_keyfile=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigurationError, match="ssl_certfile must name a readable file"):
        RedisConnection(ssl_certfile=str(tmp_path))  # a directory


def test_tls_settings_without_a_tls_url_are_refused(pem: dict[str, str]) -> None:
    conn = RedisConnection(ssl_certfile=pem["cert"], ssl_keyfile=pem["key"])
    for url in ("redis://user:p@ss@host:6379/0", "unix:///tmp/redis.sock"):
        with pytest.raises(ConfigurationError, match="need a rediss:// URL") as info:
            make_client(url, conn)
        assert "p@ss" not in str(info.value)
    plain = make_client("redis://host:6379/0", RedisConnection())
    assert "ssl_certfile" not in plain.connection_pool.connection_kwargs


def test_pools_wait_for_a_free_connection() -> None:
    conn = RedisConnection(max_connections=3, connect_timeout=0.4)
    for make in (make_client, make_async_client):
        pool = make("redis://127.0.0.1:1/0", conn).connection_pool
        assert "Blocking" in type(pool).__name__
        assert pool.max_connections == 3
        assert pool.timeout == 0.4


@pytest.mark.redis
def test_more_concurrent_commands_than_connections_all_succeed(redis_url: str) -> None:
    """Past ``max_connections`` a command waits for a connection rather than failing."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    conn = RedisConnection(max_connections=2, socket_timeout=2.0, connect_timeout=2.0)

    async def many() -> list[bool]:
        client = make_async_client(redis_url, conn)
        try:
            return list(await asyncio.gather(*(client.ping() for _ in range(50))))
        finally:
            await client.aclose()

    assert asyncio.run(many()) == [True] * 50
    client = make_client(redis_url, conn)
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda _: client.ping(), range(50))) == [True] * 50
    client.close()
