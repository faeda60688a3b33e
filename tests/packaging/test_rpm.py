"""The RPM `make rpm` builds: file list, config flags, requirements, rpmlint, upgrade and removal
keeping a modified /etc/sysconfig/vipaddrs, and the launchers of an unpacked RPM answering INTF
and running the check, with Python 3.9.

Built once per module with Debian's rpm/rpmbuild/rpmlint (`make setup` installs them), into a
temporary directory, so a test run never touches dist/ or build/ of the working tree.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import pytest

from cgp_ipvs_helper import __version__

ROOT = Path(__file__).resolve().parents[2]
VERSION = __version__
NAME = f"cgp-ipvs-helper-{VERSION}-1.noarch.rpm"
PRIV = "/usr/lib/cgp-ipvs-helper"
LAUNCHER = "/opt/CommuniGate/Services/IPVSHelper.py"
PYTHON = "/usr/libexec/cgp-ipvs-helper/python"  # runs the newest Python the RPM accepts
ANY_PYTHON = "(/usr/bin/python3.12 or /usr/bin/python3.11 or /usr/bin/python3.9 or python3 >= 3.9)"
BUNDLED = {"pyroute2": "0.9.7", "netaddr": "1.3.0", "attrs": "26.1.0"}
# rpmlint errors the package cannot fix, filtered by packaging/cgp-ipvs-helper.rpmlintrc
FILTERED = {"dir-or-file-in-opt", "no-signature", "no-packager-tag"}
TOOLS = ("rpmbuild", "rpm", "rpm2cpio", "cpio", "rpmlint", "make")


def sh(argv: Sequence[str], **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=600, check=False, **kw
    )  # type: ignore[call-overload]


def make_rpm(top: Path, dist: Path, release: int = 1) -> Path:
    proc = sh(
        ["make", "-s", "rpm", f"RPM_TOP={top}", f"RPM_DIST={dist}", f"RPM_RELEASE={release}"],
        cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return dist / f"cgp-ipvs-helper-{VERSION}-{release}.noarch.rpm"


def query(rpm: Path, *args: str) -> list[str]:
    proc = sh(["rpm", "-qp", *args, str(rpm)])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.fixture(scope="module")
def files(built: Path) -> dict[str, tuple[str, str]]:
    """path -> (file flags as rpm prints them, mode)."""
    rows = query(built, "--qf", "[%{FILENAMES}\t%{FILEFLAGS:fflags}\t%{FILEMODES:perms}\n]")
    return {path: (flags, mode) for path, flags, mode in (r.split("\t") for r in rows)}


@pytest.fixture(scope="module")
def tree(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The RPM's payload unpacked as it would land on /."""
    root = tmp_path_factory.mktemp("tree")
    cpio = subprocess.Popen(["cpio", "-idm", "--quiet"], cwd=str(root), stdin=subprocess.PIPE)
    conv = subprocess.run(["rpm2cpio", str(built)], stdout=cpio.stdin, check=False, timeout=120)
    assert cpio.stdin is not None
    cpio.stdin.close()
    assert cpio.wait(timeout=120) == 0 and conv.returncode == 0
    return root


def test_make_rpm_writes_dist_name_version_release_noarch(built: Path) -> None:
    assert built.name == NAME and built.is_file()
    header = query(built, "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}\n")
    assert header == [f"cgp-ipvs-helper {VERSION} 1 noarch"]
    plan = sh(["make", "-n", "rpm"], cwd=str(ROOT))
    assert f"dist/{NAME}" in plan.stdout  # the default destination


def test_file_list(files: dict[str, tuple[str, str]]) -> None:
    expected = {
        LAUNCHER: "-rwxr-xr-x",
        "/usr/sbin/cgp-ipvs-helper": "-rwxr-xr-x",
        PYTHON: "-rwxr-xr-x",
        "/usr/sbin/cgp-ipvs-vip": "-rwxr-xr-x",
        "/etc/sysconfig/network-scripts/ifup-lo": "-rwxr-xr-x",
        "/etc/sysconfig/network-scripts/ifdown-lo": "-rwxr-xr-x",
        "/etc/sysconfig/network-scripts/ifvip-utils": "-rw-r--r--",
        "/etc/sysconfig/vipaddrs": "-rw-r--r--",
        "/etc/sysconfig/cgp-ipvs-members": "-rw-r--r--",
        "/usr/lib/sysctl.d/90-cgp-ipvs-helper.conf": "-rw-r--r--",
        "/usr/lib/modules-load.d/cgp-ipvs-helper.conf": "-rw-r--r--",
        "/usr/lib/systemd/system/cgp-ipvs-vip.service": "-rw-r--r--",
        "/usr/lib/systemd/system-preset/80-cgp-ipvs-helper.preset": "-rw-r--r--",
        f"{PRIV}/pyroute2/__init__.py": "-rw-r--r--",
        f"{PRIV}/netaddr/__init__.py": "-rw-r--r--",
        f"{PRIV}/attr/__init__.py": "-rw-r--r--",
        f"{PRIV}/attrs/__init__.py": "-rw-r--r--",
    }
    for module in sorted((ROOT / "cgp_ipvs_helper").rglob("*.py")):
        expected[f"{PRIV}/{module.relative_to(ROOT)}"] = "-rw-r--r--"
    assert {path: files[path][1] for path in expected if path in files} == expected
    for dist, version in BUNDLED.items():
        assert f"{PRIV}/{dist}-{version}.dist-info/METADATA" in files
    assert any(p.startswith("/usr/share/licenses/cgp-ipvs-helper/pyroute2-") for p in files)
    # nothing compiled, nothing for tests, no pip-made scripts; everything in known places
    assert not [p for p in files if p.endswith((".pyc", ".pyo")) or "__pycache__" in p]
    assert not [p for p in files if "/tests/" in p or p.startswith(f"{PRIV}/bin")]
    places = (PRIV, "/etc/sysconfig/", "/opt/CommuniGate/Services", "/usr/lib/systemd/",
              "/usr/lib/sysctl.d/", "/usr/lib/modules-load.d/", "/usr/sbin/cgp-ipvs-",
              "/usr/libexec/cgp-ipvs-helper",
              "/usr/share/doc/cgp-ipvs-helper", "/usr/share/licenses/cgp-ipvs-helper")  # fmt: skip
    assert [p for p in files if not p.startswith(places)] == []


def test_only_the_two_sysconfig_files_are_config_and_noreplace(
    built: Path, files: dict[str, tuple[str, str]]
) -> None:
    configs = ["/etc/sysconfig/cgp-ipvs-members", "/etc/sysconfig/vipaddrs"]
    assert sorted(query(built, "--configfiles")) == configs
    for path in configs:
        flags = files[path][0]
        assert "c" in flags and "n" in flags, path  # %config(noreplace)


def test_requirements(built: Path) -> None:
    requires = query(built, "-R")
    assert ANY_PYTHON in requires
    allowed = re.compile(
        rf"{re.escape(ANY_PYTHON)}|{PYTHON}|/bin/(ba)?sh|config\(cgp-ipvs-helper\) = .*|rpmlib\(.*"
    )
    assert [r for r in requires if not allowed.fullmatch(r)] == []
    provides = query(built, "--provides")
    for dist, version in BUNDLED.items():
        assert f"bundled(python3dist({dist})) = {version}" in provides
    assert not [p for p in provides if re.match(r"python\d?(\.\d+)?dist|python\(abi\)", p)]
    assert query(built, "--recommends") == ["ipvsadm"]


def test_rpmlint_reports_no_errors(built: Path) -> None:
    rc = ROOT / "packaging" / "cgp-ipvs-helper.rpmlintrc"
    proc = sh(["rpmlint", "-r", str(rc), str(built)])
    assert proc.returncode == 0, proc.stdout
    assert " 0 errors," in proc.stdout
    warnings = sorted({m.group(1) for m in re.finditer(r": W: (\S+)", proc.stdout)})
    print("rpmlint warnings:", ", ".join(warnings))
    # without the filters, the only errors are the ones the rc file explains
    plain = sh(["rpmlint", str(built)])
    errors = {m.group(1) for m in re.finditer(r": E: (\S+)", plain.stdout)}
    assert errors <= FILTERED, plain.stdout


def test_upgrade_and_removal_keep_a_modified_vipaddrs(built: Path, tmp_path: Path) -> None:
    newer = make_rpm(tmp_path / "top", tmp_path / "dist", release=2)
    root = tmp_path / "root"
    root.mkdir()
    rpm = ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm"]
    # no dependencies or scriptlets in an empty root: only the payload and config handling
    opts = ["--nodeps", "--noscripts"]

    def ok(*args: str) -> str:
        proc = sh([*rpm, *args])
        assert proc.returncode == 0, proc.stderr
        return proc.stdout + proc.stderr

    ok("--initdb")
    ok("-i", *opts, str(built))
    vipaddrs = root / "etc" / "sysconfig" / "vipaddrs"
    assert vipaddrs.read_bytes() == (ROOT / "sysconfig" / "vipaddrs").read_bytes()
    mine = "# this frontend\n203.0.113.7\n"
    vipaddrs.write_text(mine)
    ok("-U", *opts, str(newer))
    assert ok("-q", "cgp-ipvs-helper").strip() == f"cgp-ipvs-helper-{VERSION}-2.noarch"
    assert vipaddrs.read_text() == mine
    assert not vipaddrs.with_name("vipaddrs.rpmnew").exists()
    out = ok("-e", *opts, "cgp-ipvs-helper")
    assert not vipaddrs.exists()
    assert vipaddrs.with_name("vipaddrs.rpmsave").read_text() == mine
    assert "saved as /etc/sysconfig/vipaddrs.rpmsave" in out
    assert not (root / PRIV.lstrip("/")).exists()


@pytest.fixture
def run_launcher(tree: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run an installed launcher of the unpacked RPM as its "#!" line does: through the RPM's
    python chooser, which finds this test's Python as the only one of its bin directory."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CGP_IPVS_HELPER_LIB": str(tree / PRIV.lstrip("/")),
        "CGP_IPVS_HELPER_BINDIR": str(bindir),
    }

    def run(path: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
        script = tree / path.lstrip("/")
        interpreter, *options = script.read_text().splitlines()[0][2:].split()
        assert interpreter == PYTHON and options == ["-s"]
        argv = [str(tree / PYTHON.lstrip("/")), *options, str(script), *args]
        return subprocess.run(
            argv, input=stdin, capture_output=True, text=True, env=env, cwd=str(tree),
            timeout=120, check=False,
        )  # fmt: skip

    return run


def test_launcher_from_the_unpacked_rpm_answers_intf(
    tree: Path, run_launcher: Callable[..., subprocess.CompletedProcess]
) -> None:
    sample = str(tree / "etc" / "sysconfig" / "vipaddrs")
    proc = run_launcher(LAUNCHER, "-m", "-f", sample, stdin="1 INTF 3\n2 QUIT\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    answers = [line for line in proc.stdout.splitlines() if not line.startswith("* ")]
    assert answers == ["1 INTF 1", "2 OK"], proc.stdout
    assert "8 VIPs from" in proc.stdout
    assert not list(tree.rglob("__pycache__"))  # the launcher writes no bytecode

    vip = run_launcher("/usr/sbin/cgp-ipvs-vip", "-f", sample, "list")
    assert vip.returncode == 0, vip.stderr
    assert len(vip.stdout.splitlines()) == 8


def test_cgp_ipvs_helper_check_reports_one_line_per_check(
    tree: Path, run_launcher: Callable[..., subprocess.CompletedProcess], tmp_path: Path
) -> None:
    sample = str(tree / "etc" / "sysconfig" / "vipaddrs")
    proc = run_launcher(
        "/usr/sbin/cgp-ipvs-helper", "check", "-f", sample, "--member-map", str(tmp_path / "no")
    )
    lines = proc.stdout.splitlines()
    assert proc.stderr == "" and len(lines) > 8, proc.stderr
    assert all(re.match(r"(OK  |WARN|FAIL) ", line) for line in lines[:-1]), proc.stdout
    assert f"OK   VIP file {sample}: 8 VIPs (0 IPv6)" in lines
    # this host's kernel has no IPVS and its lo none of the VIPs: a failure, and its status
    assert lines[-1].startswith("check: FAIL (") and proc.returncode == 2


def test_the_bundled_libraries_are_the_ones_imported(tree: Path) -> None:
    python = sys.executable
    lib = tree / PRIV.lstrip("/")
    code = (
        "import sys; sys.dont_write_bytecode = True; sys.path.insert(0, sys.argv[1])\n"
        "import attr, attrs, netaddr, pyroute2, cgp_ipvs_helper.kernel.netlink.kernel\n"
        "for m in (attr, attrs, netaddr, pyroute2, cgp_ipvs_helper):\n"
        "    print(m.__file__)\n"
    )
    proc = sh([python, "-I", "-c", code, str(lib)])
    assert proc.returncode == 0, proc.stderr
    assert all(line.startswith(str(lib) + "/") for line in proc.stdout.splitlines()), proc.stdout


def test_the_unit_and_the_scripts_call_what_the_rpm_installs(
    tree: Path, files: dict[str, tuple[str, str]]
) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(tree / "usr/lib/systemd/system/cgp-ipvs-vip.service")
    service = unit["Service"]
    assert service["Type"] == "oneshot" and service["RemainAfterExit"] == "yes"
    for key in ("ExecStart", "ExecStop"):
        assert service[key].split()[0] in files
    assert service["ExecStart"].split()[-1] == "up"
    assert service["ExecStop"].split()[-1] == "down"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    utils = (tree / "etc/sysconfig/network-scripts/ifvip-utils").read_text()
    assert "IFVIP_CMD=${IFVIP_CMD:-/usr/sbin/cgp-ipvs-vip}" in utils
    assert "IFVIP_FILE=${IFVIP_FILE:-/etc/sysconfig/vipaddrs}" in utils
    preset = (tree / "usr/lib/systemd/system-preset/80-cgp-ipvs-helper.preset").read_text()
    assert "enable cgp-ipvs-vip.service" in preset
    sysctl = (tree / "usr/lib/sysctl.d/90-cgp-ipvs-helper.conf").read_text()
    settings = {
        k.strip(): v.strip()
        for k, _, v in (line.partition("=") for line in sysctl.splitlines())
        if k.strip() and not k.startswith("#")
    }
    assert settings == {"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"}
    modules = (tree / "usr/lib/modules-load.d/cgp-ipvs-helper.conf").read_text().split("\n")
    assert {"ip_vs", "ip_vs_wlc"} <= set(modules)


def test_post_compiles_the_private_directory_and_preun_cleans_it(
    built: Path, tree: Path, tmp_path: Path
) -> None:
    scripts = "\n".join(query(built, "--scripts"))
    post = f"{PYTHON} -m compileall -q {PRIV} >/dev/null 2>&1 || :"
    preun = f"find {PRIV} -depth -type d -name __pycache__ -exec rm -rf {{}} + 2>/dev/null || :"
    assert post in scripts and preun in scripts
    # what %post does: every bundled file compiles (the oldest Python it accepts: test_py39)
    python = sys.executable
    lib = tmp_path / "lib"
    shutil.copytree(tree / PRIV.lstrip("/"), lib)
    proc = sh([python, "-m", "compileall", "-q", str(lib)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(lib.rglob("__pycache__/*.pyc"))
    # what %preun does on removal leaves only the packaged files
    proc = sh(["sh", "-c", preun.replace(PRIV, str(lib))])
    assert proc.returncode == 0
    assert not list(lib.rglob("__pycache__"))
