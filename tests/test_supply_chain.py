"""Supply-chain checks on the test environment itself.

litellm 1.82.7 and 1.82.8 were published by an attacker: they installed ``litellm_init.pth``,
which Python runs at every interpreter start, and stole credentials. 1.107.0 was also reported
compromised. A ``.pth`` file can execute code (any line starting with ``import``), so every one
in the environment must be known: the setuptools distutils shim and editable-install path
files. Anything else fails the suite, showing the file and its content.
"""

from __future__ import annotations

import re
import site
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import pytest

#: Versions known to be malicious; never install them.
COMPROMISED_LITELLM = frozenset({"1.82.7", "1.82.8", "1.107.0"})

_SHIM = re.compile(r"^import os; var = 'SETUPTOOLS_USE_DISTUTILS'; ")
_EDITABLE_FINDER = re.compile(
    r"^import __editable___[\w.]+_finder; __editable___[\w.]+_finder\.install\("
)

# (file name pattern, allowed executable lines); any non-import line of a .pth is a sys.path entry.
_ALLOWED: tuple[tuple[re.Pattern[str], tuple[re.Pattern[str], ...]], ...] = (
    (re.compile(r"^distutils-precedence\.pth$"), (_SHIM,)),
    (re.compile(r"^__editable__\..+\.pth$"), (_EDITABLE_FINDER,)),
    (re.compile(r"^_editable_impl_semcache_middleware\.pth$"), ()),
    (re.compile(r"^_semcache.*\.pth$"), ()),
)


def _executes(line: str) -> bool:
    """``site`` executes a .pth line that starts with ``import`` followed by space or tab."""
    return line.startswith(("import ", "import\t"))


def unexpected_pth(directories: Iterable[Path]) -> list[tuple[Path, str]]:
    """Every .pth file not on the allow-list, or on it but running code it should not."""
    found = []
    for directory in directories:
        for pth in sorted(directory.glob("*.pth")):
            content = pth.read_text(encoding="utf-8", errors="replace")
            rule = next((code for name, code in _ALLOWED if name.match(pth.name)), None)
            code_lines = [line for line in content.splitlines() if _executes(line)]
            if rule is None or not all(any(p.match(line) for p in rule) for line in code_lines):
                found.append((pth, content))
    return found


def _site_dirs() -> list[Path]:
    dirs = [Path(d) for d in site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        dirs.append(Path(site.getusersitepackages()))
    return [d for d in dirs if d.is_dir()]


def test_no_unexpected_pth_files() -> None:
    found = unexpected_pth(_site_dirs())
    report = "\n\n".join(f"{path}:\n{content}" for path, content in found)
    assert not found, f"unexpected .pth files (they run at every interpreter start):\n{report}"


def test_installed_litellm_is_in_the_pinned_range() -> None:
    try:
        version = metadata.version("litellm")
    except metadata.PackageNotFoundError:
        pytest.skip("litellm is not installed")
    assert version not in COMPROMISED_LITELLM, f"litellm {version} is a known-compromised release"
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
    assert (1, 100, 0) <= parts < (1, 103, 1), f"litellm {version} is outside >=1.100.0,<1.103.1"


def test_the_check_catches_the_litellm_attack(tmp_path: Path) -> None:
    (tmp_path / "litellm_init.pth").write_text("import os, base64; exec(base64.b64decode('...'))\n")
    (tmp_path / "distutils-precedence.pth").write_text(
        "import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, 'local')\n"
    )
    (tmp_path / "_editable_impl_semcache_middleware.pth").write_text("/src\n/src/integrations\n")
    (tmp_path / "__editable__.pkg-1.0.pth").write_text(
        "import __editable___pkg_1_0_finder; __editable___pkg_1_0_finder.install('/src')\n"
    )
    # an allowed name running other code is caught too
    (tmp_path / "_semcache_evil.pth").write_text("/src\nimport urllib.request\n")
    names = sorted(path.name for path, _ in unexpected_pth([tmp_path]))
    assert names == ["_semcache_evil.pth", "litellm_init.pth"]
