"""A real Python 3.9 compiles and imports every module: what the grammar and vermin
(tests/unit/test_py39.py) cannot see, such as a 3.10 name of a bundled library.

`make py39-test PY39=/path/to/python3.9`. Not part of `make test`: Debian ships no 3.9 and no
package registry an install step may use ships one, so a fresh machine has none. Without PY39,
or with another version, this fails.
"""

from __future__ import annotations

import os
import subprocess
import sysconfig

from tests.unit.test_py39 import ROOT, runtime_sources


def python39() -> str:
    path = os.environ.get("PY39", "")
    assert path, "PY39 is not set: make py39-test PY39=/path/to/python3.9"
    version = subprocess.run(
        [path, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout.strip()  # fmt: skip
    assert version == "(3, 9)", f"PY39={path} is not a Python 3.9 ({version or 'does not run'})"
    return path


def test_a_real_39_compiles_and_imports_every_module() -> None:
    py39 = python39()
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
