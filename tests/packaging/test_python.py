"""Which Python runs the helper on RHEL 8, 9 and 10, from one RPM.

1. The chooser (/usr/libexec/cgp-ipvs-helper/python, packaging/cgp-ipvs-python) with fake
   interpreters: the newest of python3.12, 3.11, 3.9, then python3 if it is 3.9 or later.
2. rpm's own dependency check of the built RPM against stand-in systems: an rpm database
   holding empty packages named, versioned and filed as each release's Python packages are
   (RHEL 8: python36 is python3 = 3.6, /usr/bin/python3.6; python39, python3.11 and
   python3.12 in AppStream; RHEL 9: python3 = 3.9 with /usr/bin/python3.9; RHEL 10: python3 =
   3.12). rpm >= 4.14 evaluates the rich dependency as dnf would for installed packages; a
   repository solve (which package dnf would pick) needs libsolv with rich dependencies, which
   Debian's is built without, so it is not done here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.packaging.test_rpm import ROOT, sh

CHOOSER = ROOT / "packaging" / "cgp-ipvs-python"


def fake_python(bindir: Path, name: str, version: tuple[int, int]) -> None:
    """An interpreter that answers the chooser's version question as `version` would, and
    otherwise prints its name and arguments."""
    script = bindir / name
    old = int(version < (3, 9))
    script.write_text(
        f'#!/bin/sh\nif [ "$1" = -c ]; then exit {old}; fi\nprintf "%s\\n" {name} "$@"\n'
    )
    script.chmod(0o755)


def choose(tmp_path: Path, pythons: dict[str, tuple[int, int]]) -> subprocess.CompletedProcess:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, version in pythons.items():
        fake_python(bindir, name, version)
    env = {"PATH": "/usr/bin:/bin", "CGP_IPVS_HELPER_BINDIR": str(bindir)}
    return subprocess.run(
        [str(CHOOSER), "-s", "/opt/x y/IPVSHelper.py", "check", ""],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("pythons", "chosen"),
    [
        (
            {"python3": (3, 6), "python3.9": (3, 9), "python3.11": (3, 11), "python3.12": (3, 12)},
            "python3.12",
        ),
        ({"python3": (3, 6), "python3.9": (3, 9), "python3.11": (3, 11)}, "python3.11"),
        ({"python3": (3, 6), "python3.9": (3, 9)}, "python3.9"),  # RHEL 8 with python39
        ({"python3.11": (3, 11)}, "python3.11"),  # no python3 at all
        ({"python3": (3, 9)}, "python3"),  # RHEL 9: python3 is 3.9 (and python3.9 too)
        ({"python3": (3, 14), "python3.14": (3, 14)}, "python3"),  # a later release
    ],
    ids=["all", "3.11", "rhel8-python39", "only-3.11", "python3-3.9", "later"],
)
def test_the_newest_suitable_python_runs_with_the_arguments_intact(
    tmp_path: Path, pythons: dict[str, tuple[int, int]], chosen: str
) -> None:
    proc = choose(tmp_path, pythons)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n") == [chosen, "-s", "/opt/x y/IPVSHelper.py", "check", "", ""]


@pytest.mark.parametrize("pythons", [{}, {"python3": (3, 6)}, {"python3.8": (3, 8)}])
def test_without_a_python_39_or_later_it_says_what_to_install(
    tmp_path: Path, pythons: dict[str, tuple[int, int]]
) -> None:
    proc = choose(tmp_path, pythons)
    assert proc.returncode == 127 and proc.stdout == ""
    assert "no Python 3.9 or later" in proc.stderr and "dnf install python3.12" in proc.stderr


def test_the_chooser_and_the_requires_name_the_same_pythons_in_the_same_order() -> None:
    spec = (ROOT / "packaging" / "cgp-ipvs-helper.spec").read_text()
    requires = next(x for x in spec.splitlines() if x.startswith("Requires:"))
    paths = [w for w in requires.replace("(", " ").split() if w.startswith("/usr/bin/python")]
    loop = next(x for x in CHOOSER.read_text().splitlines() if x.startswith("for version in"))
    versions = loop.partition(" in ")[2].partition(";")[0].split()
    assert (
        paths
        == [f"/usr/bin/python{v}" for v in versions]
        == [
            "/usr/bin/python3.12",
            "/usr/bin/python3.11",
            "/usr/bin/python3.9",
        ]
    )
    assert requires.endswith("or python3 >= 3.9)")


# Each release's packages as rpm sees them: name, version, provides, files.
_PACKAGES = {
    "bash": ("5.1", (), ("/bin/sh", "/bin/bash")),
    "python36": ("3.6.8", ("python3 = 3.6.8",), ("/usr/bin/python3.6",)),
    "python39": ("3.9.20", (), ("/usr/bin/python3.9",)),
    "python3.11": ("3.11.11", (), ("/usr/bin/python3.11",)),
    "python3.12": ("3.12.8", (), ("/usr/bin/python3.12",)),
    "python3-el9": ("3.9.21", ("python3 = 3.9.21",), ("/usr/bin/python3.9", "/usr/bin/python3")),
    "python3-el10": ("3.12.9", ("python3 = 3.12.9",), ("/usr/bin/python3.12",)),
    "python3-later": ("3.14.0", ("python3 = 3.14.0",), ("/usr/bin/python3.14",)),
}
SYSTEMS = {
    "rhel8": (("bash", "python36"), False),
    "rhel8+python39": (("bash", "python36", "python39"), True),
    "rhel8+python3.11": (("bash", "python36", "python3.11"), True),
    "rhel8+python3.12": (("bash", "python36", "python3.12"), True),
    "rhel9": (("bash", "python3-el9"), True),
    "rhel10": (("bash", "python3-el10"), True),
    "later": (("bash", "python3-later"), True),
}


def _standin_spec(name: str) -> str:
    version, provides, files = _PACKAGES[name]
    lines = [
        f"Name: {name}",
        f"Version: {version}",
        "Release: 1",
        "Summary: stand-in",
        "License: MIT",
        "BuildArch: noarch",
        "AutoReqProv: no",
        *(f"Provides: {p}" for p in provides),
        "%description",
        "stand-in",
        "%install",
        *(f"install -D -m 0755 /dev/null %{{buildroot}}{f}" for f in files),
        "%files",
        *files,
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    top = tmp_path_factory.mktemp("standins")
    found = {}
    for name in _PACKAGES:
        spec = top / f"{name}.spec"
        spec.write_text(_standin_spec(name))
        proc = sh(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", str(spec)])
        assert proc.returncode == 0, proc.stderr
        found[name] = next((top / "RPMS" / "noarch").glob(f"{name}-[0-9]*.rpm"))
    return found


@pytest.mark.parametrize("system", SYSTEMS)
def test_rpm_accepts_the_package_where_a_python_39_or_later_is_installed(
    system: str, built: Path, standins: dict[str, Path], tmp_path: Path
) -> None:
    names, accepted = SYSTEMS[system]
    rpm = ["rpm", "--root", str(tmp_path), "--dbpath", "/var/lib/rpm"]
    assert sh([*rpm, "--initdb"]).returncode == 0
    installed = sh([*rpm, "-i", "--justdb", *(str(standins[n]) for n in names)])
    assert installed.returncode == 0, installed.stderr
    proc = sh([*rpm, "-i", "--test", "--justdb", str(built)])
    if accepted:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0
        assert "(/usr/bin/python3.12 or /usr/bin/python3.11 or /usr/bin/python3.9 or " \
            "python3 >= 3.9) is needed by cgp-ipvs-helper" in proc.stderr, proc.stderr  # fmt: skip
