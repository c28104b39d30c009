"""examples/langchain_chain.py runs offline and answers the paraphrase from the cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("langchain_core")

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.model


def test_langchain_example_runs(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "langchain_chain.py"), "--path", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    answers = [line for line in lines if line.startswith("A: ")]
    assert answers == ["A: Paris.", "A: Paris."], done.stdout
    assert "semcache: 2 hits (0 exact, 2 semantic), 2 misses, 2 stores" in lines
    assert (tmp_path / "cache" / "entries.sqlite3").is_file()
