"""One writer per cache directory: a second backend, in another process or this one, is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from semcache import (
    BackendError,
    ConfigurationError,
    EmbeddedBackend,
    FingerprintMismatchError,
    ModelFingerprint,
)
from semcache.backends.lock import LOCK_NAME
from semcache.models import NewEntry

FP = ModelFingerprint(model="test-model", dim=8)

# Opens the directory, says so, and holds it until a line arrives on stdin (or it is killed).
_HOLDER = """
import sys
from semcache import EmbeddedBackend, ModelFingerprint
b = EmbeddedBackend(sys.argv[1])
b.bind(ModelFingerprint(model="test-model", dim=8))
print("ready", flush=True)
sys.stdin.readline()
b.close()
"""

# Tries to open the directory once; reports what happened as JSON.
_OPENER = """
import json, sys
from semcache import EmbeddedBackend, ModelFingerprint
try:
    b = EmbeddedBackend(sys.argv[1])
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
else:
    b.bind(ModelFingerprint(model="test-model", dim=8))
    print(json.dumps({"error": None, "count": b.count()}))
    b.close()
"""


def _hold(path: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "ready"
    return holder


def _try_open(path: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _OPENER, str(path)], check=True, capture_output=True, text=True
    )
    report: dict[str, object] = json.loads(out.stdout)
    return report


def test_a_second_process_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    with _hold(tmp_path) as holder:
        refused = _try_open(tmp_path)
        assert refused["error"] == "ConfigurationError"
        assert str(tmp_path) in str(refused["message"])
        assert f"process {holder.pid}" in str(refused["message"])
        holder.communicate("close\n", timeout=60)
        assert holder.returncode == 0
    assert _try_open(tmp_path) == {"error": None, "count": 0}


def test_a_killed_holder_leaves_the_directory_free(tmp_path: Path) -> None:
    with _hold(tmp_path) as holder:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)
    assert _try_open(tmp_path)["error"] is None


def test_a_second_backend_in_this_process_is_refused(tmp_path: Path) -> None:
    first = EmbeddedBackend(tmp_path)
    first.bind(FP)
    with pytest.raises(ConfigurationError, match="another backend in this process") as refused:
        EmbeddedBackend(tmp_path)
    assert str(tmp_path) in str(refused.value)
    first.close()
    with EmbeddedBackend(tmp_path) as again:
        again.bind(FP)
        assert again.count() == 0


def test_the_lock_file_names_the_holder(tmp_path: Path) -> None:
    with EmbeddedBackend(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_a_refused_model_releases_the_directory(tmp_path: Path) -> None:
    with EmbeddedBackend(tmp_path) as b:
        b.bind(FP)
    wrong = EmbeddedBackend(tmp_path)
    with pytest.raises(FingerprintMismatchError):
        wrong.bind(ModelFingerprint(model="other-model", dim=8))
    with EmbeddedBackend(tmp_path) as right:  # not refused: `wrong` gave the directory up
        right.bind(FP)
        vec = np.ones(8, dtype=np.float32) / np.sqrt(8)
        right.put(NewEntry(scope_key="s", text_key="t", prompt="p", response=1, created_at=0), vec)
        assert right.count() == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_may_not_use_its_parents_backend(tmp_path: Path) -> None:
    """A fork shares the parent's lock, so the lock alone would let both write: refused."""
    b = EmbeddedBackend(tmp_path)
    b.bind(FP)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what using the inherited backend does, then leave
        os.close(read)
        try:
            b.count()
            b.get_exact("s", "t", 0.0)
            outcome = b"used"
        except BackendError as e:
            outcome = b"refused: " + str(e).encode()
        os.write(write, outcome)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        outcome = f.read().decode()
    os.waitpid(pid, 0)
    assert outcome.startswith("refused: ")
    assert "a fork" in outcome
    assert b.get_exact("s", "t", 0.0) is None  # the parent still may
    b.close()
