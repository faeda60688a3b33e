"""All runtime code runs on Python 3.9, the python3 of RHEL 9 (the RPM requires python3 >= 3.9).

The package and the launchers are checked against the 3.9 grammar here; where a real 3.9
interpreter is at hand (pyenv's, on these machines) every module is also compiled and imported
by it, which catches what the grammar alone does not (a 3.10 name imported at module level).
test_packaging.py runs the launcher of the built RPM with it.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PY39_CANDIDATES = ("/root/.pyenv/versions/3.9.18/bin/python3.9", "python3.9")


def runtime_sources() -> list[Path]:
    """Every Python file that is installed: the package, and the launchers in packaging/."""
    files = sorted((ROOT / "cgp_ipvs_helper").rglob("*.py"))
    for path in sorted((ROOT / "packaging").iterdir()):
        if path.is_file() and (
            path.suffix == ".py" or path.read_bytes().startswith(b"#!/usr/bin/python3")
        ):
            files.append(path)
    return files


def python39() -> str | None:
    for candidate in PY39_CANDIDATES:
        found = shutil.which(candidate) if "/" not in candidate else candidate
        if found and os.access(found, os.X_OK):
            return found
    return None


def test_the_sources_are_found() -> None:
    names = {p.name for p in runtime_sources()}
    assert {"cli.py", "vipctl.py", "kernel.py", "IPVSHelper.py", "cgp-ipvs-vip.py"} <= names


@pytest.mark.parametrize("path", runtime_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_parses_with_the_39_grammar(path: Path) -> None:
    ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 9))


def test_ruff_targets_py39() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^target-version\s*=\s*"py39"', pyproject, re.M)
    assert re.search(r'^requires-python\s*=\s*">=3\.9"', pyproject, re.M)


def test_a_real_39_compiles_and_imports_every_module() -> None:
    py39 = python39()
    if py39 is None:
        pytest.skip("no Python 3.9 interpreter here (grammar checked above)")
    # pyroute2, netaddr and attrs are pure Python: 3.9 imports them from this venv's
    # site-packages (-B: no 3.9 bytecode written next to them or the sources).
    site = sysconfig.get_paths()["purelib"]
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "cgp_ipvs_helper").rglob("*.py")
        if p.stem != "__main__"
    )
    script = (
        "import importlib, sys\n"
        "for f in sys.argv[1:]:\n"
        "    compile(open(f, encoding='utf-8').read(), f, 'exec')\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print(sys.version_info[:2])\n"
    )
    proc = subprocess.run(
        [py39, "-B", "-I", "-c", f"import sys; sys.path[:0] = {[str(ROOT), site]!r}\n" + script]
        + [str(p) for p in runtime_sources()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(3, 9)"
