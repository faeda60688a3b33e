"""All runtime code runs on Python 3.9, the python3 of RHEL 9 and the oldest the RPM accepts.

Checked here on every machine, without a 3.9 interpreter: the 3.9 grammar (ast), and vermin's
minimum versions of what the code uses from the standard library (a 3.10 name imported or
called, a 3.10 argument), which the grammar alone does not catch. No 3.9 interpreter comes
from Debian or a package registry, so the run of a real one is `make py39-test PY39=...`
(tests/py39).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def runtime_sources() -> list[Path]:
    """Every Python file that is installed: the package, and the launchers in packaging/."""
    files = sorted((ROOT / "cgp_ipvs_helper").rglob("*.py"))
    files += sorted((ROOT / "packaging").glob("*.py"))
    return files


def test_the_sources_are_found() -> None:
    names = {p.name for p in runtime_sources()}
    assert {"cli.py", "vipctl.py", "kernel.py", "launcher.py"} <= names


@pytest.mark.parametrize("path", runtime_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_parses_with_the_39_grammar(path: Path) -> None:
    ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 9))


def test_nothing_used_is_newer_than_39() -> None:
    vermin = Path(sys.executable).with_name("vermin")  # (installed by make setup: .[test])
    options = ["--target=3.9-", "--violations", "--no-tips", "--eval-annotations"]
    proc = subprocess.run(
        [str(vermin), *options, *map(str, runtime_sources())],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Minimum required versions: 3.9" in proc.stdout, proc.stdout


def test_ruff_targets_py39() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^target-version\s*=\s*"py39"', pyproject, re.M)
    assert re.search(r'^requires-python\s*=\s*">=3\.9"', pyproject, re.M)
