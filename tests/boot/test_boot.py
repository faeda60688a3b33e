"""The RPM under a real systemd: installed by `rpm -i` into a Debian root, booted with systemd as
PID 1 in user-mode Linux, then removed by `rpm -e`.

Four boots of one throw-away copy of the cached root (tests/boot/rootfs.py), run from here:

1. install: a shell script as PID 1 runs `rpm -i` (so the scriptlets run against a real kernel
   and the root as /, not the host), recording the ARP sysctls and modules before and after;
2. "bare": /lib/systemd/systemd as PID 1, no network manager, with a stand-in for CommuniGate
   Pro's unit and a probe that records what the tests assert, then powers off (system.py);
3. "networkd": the same with a network manager giving a dummy "LAN" interface its address;
4. after: a shell script reads the journal of boots 2 and 3 and runs `rpm -e`.

Needs root (debootstrap, and a root whose files belong to root); fails, never skips, without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.boot import machine, rootfs, system
from tests.boot.system import LAN, NETWORKD, STANDIN, UNIT, WAIT_ONLINE, WORK, Boot
from tests.packaging.test_rpm import NAME, PRIV, VERSION, make_rpm

VIPFILE = "/etc/sysconfig/vipaddrs"
# The operator's edit of the packaged sample: 2 + 4 VIPs (rpm -e must keep it as .rpmsave).
MY_VIPS = "# frontends of group A\n198.51.100.10\n198.51.100.11  # SIP\n203.0.113.20/30\n"
VIPS = ["198.51.100.10", "198.51.100.11", *(f"203.0.113.{n}" for n in range(20, 24))]
ON_LO = sorted(["127.0.0.1/8", *(f"{vip}/32" for vip in VIPS)])
RPM = "rpm --dbpath /var/lib/rpm"
SYSTEMD_BOOT_S = 300.0
BOOTS = ("bare", "networkd")

# Before and after rpm -i: what a fresh kernel has, and what %post changes at once.
STATE = (
    'state() { echo "$1 arp_ignore=$(cat /proc/sys/net/ipv4/conf/all/arp_ignore)'
    " arp_announce=$(cat /proc/sys/net/ipv4/conf/all/arp_announce)"
    " ip_vs=$(grep -c '^ip_vs ' /proc/modules)\"; }\n"
)
INSTALL = f"""{STATE}state before
{RPM} --initdb
{RPM} -i --nodeps /var/tmp/{NAME}
state after
echo "python3 $(command -v python3 || echo none)"
echo "launcher $(/usr/sbin/cgp-ipvs-helper --version 2>&1)"
status=0; /usr/sbin/cgp-ipvs-helper check >{WORK}/check.out 2>&1 || status=$?
echo "check status $status $(tail -n 1 {WORK}/check.out)"
echo "pyc $(find {PRIV} -name '*.pyc' | wc -l) $(find {PRIV} -name '*.cpython-311.pyc' | wc -l)"
echo "wants $(readlink /etc/systemd/system/multi-user.target.wants/{UNIT})"
"""
AFTER = f"""journalctl -D /var/log/journal -o json --no-pager >{WORK}/journal.json
{RPM} -e cgp-ipvs-helper
"""


@dataclass
class Booted:
    root: Path
    install: str  # output of the install boot
    boots: dict[str, Boot]
    erase: str  # output of rpm -e


class _Phases:
    """Prints how long each phase took (the test's own cost, cold and cached)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def done(self, what: str) -> None:
        now = time.monotonic()
        print(f"boot test: {what}: {now - self.last:.1f} s", flush=True)
        self.last = now


def _copy_root(cached: Path, run: Path, phases: _Phases) -> None:
    """run: a private copy of the cached root, with the kernel's modules, and python3.11 as its
    only Python: no python3 (as on RHEL 8 with python3.11 installed, python3 there being 3.6)."""
    subprocess.run(["cp", "-a", f"{cached}/.", str(run)], check=True, timeout=600)
    (run / "usr/bin/python3").unlink()
    machine.install_modules(run)
    phases.done(f"copied to {run}")


def _boot_all(run: Path, logs: Path, phases: _Phases) -> Booted:
    rpm = make_rpm(logs / "top", logs / "dist")
    shutil.copy(rpm, run / "var/tmp" / NAME)
    phases.done("make rpm")
    # --nodeps: the root's rpm database is empty (Debian's python3 and sh belong to dpkg),
    # so rpm cannot see that its Python and /bin/sh are there (tests/packaging checks Requires).
    install = machine.run_script(run, "install", INSTALL, logs / "install.console")
    phases.done("install boot (rpm -i)")
    (run / VIPFILE.lstrip("/")).write_text(MY_VIPS)
    system.add_probe_and_standin(run)
    kept = {}
    for name in BOOTS:
        if name == "networkd":
            system.add_network_manager(run)
        system.start_probe(run)
        args = ("systemd.log_color=0", "systemd.show_status=1")
        machine.boot(run, "/lib/systemd/systemd", logs / name, SYSTEMD_BOOT_S, *args)
        kept[name] = system.keep_probe(run, name)
        phases.done(f"systemd boot to power-off ({name})")
    erase = machine.run_script(run, "after", AFTER, logs / "after")
    phases.done("after boot (journal, rpm -e)")
    journal = system.read_journal(run / WORK.lstrip("/") / "journal.json")
    boots = {name: system.read_boot(kept[name], journal, logs / name) for name in BOOTS}
    return Booted(root=run, install=install, boots=boots, erase=erase)


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    if os.geteuid() != 0:
        pytest.fail("the boot test needs root (debootstrap, a root-owned root): run it as root")
    logs = tmp_path_factory.mktemp("boot")
    phases = _Phases()
    cached = rootfs.cached_root(logs / "debootstrap.log")
    phases.done(f"root {cached.name}")
    run = Path(tempfile.mkdtemp(prefix="run-", dir=str(rootfs.CACHE)))
    try:
        _copy_root(cached, run, phases)
        yield _boot_all(run, logs, phases)
    finally:
        if os.environ.get("CGP_BOOT_KEEP"):
            print(f"boot test: kept {run}")
        else:
            shutil.rmtree(run, ignore_errors=True)
            phases.done("removed the copy")


@pytest.fixture(params=BOOTS)
def boot(request: pytest.FixtureRequest, booted: Booted) -> Boot:
    return booted.boots[request.param]


def test_rpm_i_ran_the_scriptlets_against_the_kernel_and_enabled_the_unit(booted: Booted) -> None:
    lines = booted.install.splitlines()
    # a fresh kernel has 0, 0 and no ip_vs; %post applied the sysctl file and loaded ip_vs at once
    assert "before arp_ignore=0 arp_announce=0 ip_vs=0" in lines, booted.install
    assert "after arp_ignore=1 arp_announce=2 ip_vs=1" in lines, booted.install
    # %post byte-compiled the private directory with the only Python, 3.11, and enabled the unit
    assert "python3 none" in lines, booted.install
    # the launchers run through their "#!" chooser: IPVSHelper.py as cgp-ipvs-helper, its check
    assert f"launcher cgp-ipvs-helper {VERSION}" in lines, booted.install
    check = next(line for line in lines if line.startswith("check status "))
    assert re.fullmatch(r"check status 2 check: FAIL \(\d+ OK, \d+ WARN, \d+ FAIL\)", check), check
    pyc = [line.split()[1:] for line in lines if line.startswith("pyc ")]
    assert pyc and int(pyc[0][0]) > 0 and pyc[0][0] == pyc[0][1], booted.install
    wants = {f"wants {lib}/systemd/system/{UNIT}" for lib in ("/lib", "/usr/lib")}  # merged /usr
    assert wants & set(lines), booted.install


def test_every_vip_is_on_lo_before_network_online_and_before_the_standin(boot: Boot) -> None:
    added = boot.time(UNIT, "ExecMainExit")  # `cgp-ipvs-vip up` exited: every VIP added
    assert 0 < added <= boot.time(UNIT, "ActiveEnter")
    assert added < boot.time("network-pre.target", "ActiveEnter")
    assert added < boot.time("network-online.target", "ActiveEnter")
    assert added < boot.time(STANDIN, "ExecMainStart")
    # the same order in PID 1's own log, and the command's report of what it did
    assert boot.job_done(UNIT) < boot.job_done("network-online.target")
    assert boot.job_done("network-online.target") < boot.job_done(STANDIN)
    done = f"cgp-ipvs-vip: {VIPFILE}: 6 VIPs; 6 added to lo, 0 already there, 0 failed"
    assert done in boot.messages("cgp-ipvs-vip")
    # what the stand-in found on lo when it started, and what lo held after boot
    assert boot.addresses("standin-addresses")["lo"] == ON_LO
    assert boot.addresses()["lo"] == ON_LO


def test_the_network_manager_starts_only_once_the_vips_are_on_lo(booted: Booted) -> None:
    boot = booted.boots["networkd"]
    assert boot.time(UNIT, "ExecMainExit") < boot.time(NETWORKD, "ExecMainStart")
    assert boot.show[WAIT_ONLINE]["ActiveState"] == "active"
    # the stand-in started with the network up: the LAN address too (network-online meant it)
    assert boot.addresses("standin-addresses")[LAN[0]] == [LAN[1]]
    assert booted.boots["bare"].show[NETWORKD]["ActiveState"] == "inactive"


def test_the_arp_sysctls_of_the_package_are_applied_at_boot(boot: Boot) -> None:
    assert boot.probe["sysctl"].split() == ["arp_ignore", "1", "arp_announce", "2"]
    assert boot.show["systemd-sysctl.service"]["ActiveState"] == "active"


def test_ip_vs_is_loaded_at_boot_by_modules_load(boot: Boot) -> None:
    loaded = {line.split()[0] for line in boot.probe["modules"].splitlines()}
    assert {"ip_vs", "ip_vs_wlc"} <= loaded
    inserted = boot.messages("systemd-modules-load")
    assert "Inserted module 'ip_vs'" in inserted and "Inserted module 'ip_vs_wlc'" in inserted


def test_the_unit_is_active_exited_enabled_and_nothing_failed(boot: Boot) -> None:
    status = boot.probe["status"]
    assert "Active: active (exited)" in status, status
    assert re.search(
        rf"Loaded: loaded \((/usr)?/lib/systemd/system/{UNIT}; enabled; preset: enabled\)", status
    ), status
    assert boot.show[UNIT]["UnitFileState"] == "enabled"  # by %post's preset
    assert boot.probe["failed"] == ""


def test_the_kernel_had_no_network_device_that_reaches_anything(booted: Booted) -> None:
    links = {name: [line.split(":")[1].strip() for line in boot.probe["links"].splitlines()]
             for name, boot in booted.boots.items()}  # fmt: skip
    assert links == {"bare": ["lo"], "networkd": ["lo", LAN[0]]}
    lan = booted.boots["networkd"].probe["links"].splitlines()[1]
    assert re.search(r"\s+dummy\s", lan), lan  # a dummy interface: what it sends goes nowhere


def test_the_shutdown_was_clean_and_took_the_vips_off_lo(boot: Boot) -> None:
    done = f"cgp-ipvs-vip: {VIPFILE}: 6 VIPs; 6 removed from lo, 0 not there, 0 failed"
    assert done in boot.messages("cgp-ipvs-vip")
    assert "systemd-shutdown[1]: All filesystems unmounted." in boot.console
    assert "systemd-shutdown[1]: Powering off." in boot.console


def test_rpm_e_keeps_the_edited_vip_file_as_rpmsave(booted: Booted) -> None:
    etc = booted.root / "etc/sysconfig"
    assert (etc / "vipaddrs.rpmsave").read_text() == MY_VIPS
    assert not (etc / "vipaddrs").exists()
    assert f"{VIPFILE} saved as {VIPFILE}.rpmsave" in booted.erase
    assert not (booted.root / PRIV.lstrip("/")).exists()  # %preun removed the byte-code too
    wants = booted.root / "etc/systemd/system/multi-user.target.wants" / UNIT
    assert not wants.is_symlink()  # %preun disabled the unit
