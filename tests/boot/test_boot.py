"""The RPM under a real systemd: installed by `rpm -i` into a Debian root, booted with systemd as
PID 1 in user-mode Linux, then removed by `rpm -e`.

Three boots of one throw-away copy of the cached root (tests/boot/rootfs.py), all run from here
on the host:

1. install: a shell script as PID 1 runs `rpm -i` (so the scriptlets run against a real kernel
   and the root as /, not the host), recording the ARP sysctls and modules before and after;
2. systemd: /lib/systemd/systemd as PID 1 boots multi-user.target with a stand-in for CommuniGate
   Pro's unit and a probe that records what the tests below assert, then powers off;
3. after: a shell script reads the journal of boot 2 and runs `rpm -e`.

Needs root (debootstrap, and a root whose files belong to root); fails, never skips, without it.
"""

from __future__ import annotations

import json
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

from tests.boot import machine, rootfs
from tests.unit.test_packaging import NAME, PRIV, make_rpm

WORK = f"/{machine.WORK}"
VIPFILE = "/etc/sysconfig/vipaddrs"
# The operator's edit of the packaged sample: 2 + 4 VIPs (rpm -e must keep it as .rpmsave).
MY_VIPS = "# frontends of group A\n198.51.100.10\n198.51.100.11  # SIP\n203.0.113.20/30\n"
VIPS = ["198.51.100.10", "198.51.100.11", *(f"203.0.113.{n}" for n in range(20, 24))]
UNIT = "cgp-ipvs-vip.service"
STANDIN = "communigate-standin.service"
RPM = "rpm --dbpath /var/lib/rpm"
SYSCTLS = ("arp_ignore", "arp_announce")
SYSTEMD_BOOT_S = 300.0
# PID 1's "job done" message (sd-messages.h: SD_MESSAGE_UNIT_STARTED / "Reached target").
JOB_DONE = "39f53479d3a045ac8e11786248231fbf"

# What CommuniGate Pro's unit (the LSB script's $network) is ordered by: after the network is up.
STANDIN_UNIT = f"""[Unit]
Description=Stand-in for CommuniGate Pro (ordered like its unit)
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'ip -o -4 address show dev lo >{WORK}/standin-lo'

[Install]
WantedBy=multi-user.target
"""

PROBE_UNIT = f"""[Unit]
Description=Boot test probe: record the booted system, then power off
After=multi-user.target {STANDIN}
# systemd's own way out: no systemctl call to be killed by the shutdown it starts
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
ExecStart={WORK}/probe.sh

[Install]
WantedBy=multi-user.target
"""

SHOWN = ("ActiveState", "SubState", "UnitFileState", "ActiveEnterTimestampMonotonic",
         "ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic")  # fmt: skip
SHOWN_UNITS = (UNIT, STANDIN, "network-pre.target", "network-online.target",
               "systemd-sysctl.service", "systemd-modules-load.service")  # fmt: skip

PROBE = f"""#!/bin/sh
cd {WORK}
systemctl status --no-pager --lines=0 {UNIT} >status 2>&1
systemctl show {" ".join(f"-p {p}" for p in ("Id", *SHOWN))} {" ".join(SHOWN_UNITS)} >show
systemctl --failed --plain --no-legend >failed
for k in {" ".join(SYSCTLS)}; do echo "$k $(cat /proc/sys/net/ipv4/conf/all/$k)"; done >sysctl
cat /proc/modules >modules
ip -o link show >links
ip -o -4 address show dev lo >lo
"""

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
echo "pyc $(find {PRIV} -name '*.pyc' | wc -l)"
echo "wants $(readlink /etc/systemd/system/multi-user.target.wants/{UNIT})"
"""


@dataclass
class Booted:
    root: Path
    install: str  # output of the install boot
    probe: dict[str, str]  # file name -> what the probe recorded
    show: dict[str, dict[str, str]]  # unit -> systemctl show properties
    journal: list[dict[str, str]]  # boot 2, as journalctl -o json
    console: str  # boot 2
    erase: str  # output of rpm -e


def _show(text: str) -> dict[str, dict[str, str]]:
    units: dict[str, dict[str, str]] = {}
    for block in text.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        units[props["Id"]] = props
    return units


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _enable(root: Path, name: str, text: str) -> None:
    unit = root / "etc/systemd/system" / name
    _write(unit, text)
    wants = root / "etc/systemd/system/multi-user.target.wants" / name
    wants.symlink_to(f"/etc/systemd/system/{name}")


class _Phases:
    """Prints how long each phase took (the test's own cost, cold and cached, shows in CI logs)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def done(self, what: str) -> None:
        now = time.monotonic()
        print(f"boot test: {what}: {now - self.last:.1f} s", flush=True)
        self.last = now


def _copy_root(cached: Path, run: Path, phases: _Phases) -> None:
    """run: a private copy of the cached root, with the kernel's modules."""
    subprocess.run(["cp", "-a", f"{cached}/.", str(run)], check=True, timeout=600)
    machine.install_modules(run)
    phases.done(f"copied to {run}")


def _boot_all(run: Path, logs: Path, phases: _Phases) -> Booted:
    rpm = make_rpm(logs / "top", logs / "dist")
    shutil.copy(rpm, run / "var/tmp" / NAME)
    phases.done("make rpm")
    # --nodeps: the root's rpm database is empty (Debian's python3 and sh belong to dpkg),
    # so rpm cannot see that Requires: python3 >= 3.9, /usr/bin/python3, /bin/sh are met.
    install = machine.run_script(run, "install", INSTALL, logs / "install.console")
    phases.done("install boot (rpm -i)")
    (run / VIPFILE.lstrip("/")).write_text(MY_VIPS)
    _enable(run, STANDIN, STANDIN_UNIT)
    _enable(run, "boot-probe.service", PROBE_UNIT)
    _write(run / WORK.lstrip("/") / "probe.sh", PROBE, 0o755)
    console = logs / "systemd.console"
    args = ("systemd.log_color=0", "systemd.show_status=1")
    machine.boot(run, "/lib/systemd/systemd", console, SYSTEMD_BOOT_S, *args)
    phases.done("systemd boot to power-off")
    after = f"journalctl -D /var/log/journal -o json --no-pager >{WORK}/journal.json\n"
    erase = machine.run_script(run, "after", f"{after}{RPM} -e cgp-ipvs-helper\n", logs / "after")
    phases.done("after boot (journal, rpm -e)")
    work = run / WORK.lstrip("/")
    names = ("status", "show", "failed", "sysctl", "modules", "links", "lo", "standin-lo")
    probe = {name: (work / name).read_text() for name in names if (work / name).is_file()}
    journal = (work / "journal.json").read_text().splitlines()
    return Booted(
        root=run,
        install=install,
        probe=probe,
        show=_show(probe.get("show", "")),
        journal=[json.loads(line) for line in journal],
        console=console.read_text(errors="replace"),
        erase=erase,
    )


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


def _messages(booted: Booted, ident: str) -> list[str]:
    """What the program `ident` logged (a short-lived process may have no _SYSTEMD_UNIT)."""
    return [e.get("MESSAGE", "") for e in booted.journal if e.get("SYSLOG_IDENTIFIER") == ident]


def _job_done(booted: Booted, unit: str) -> int:
    """The monotonic time (us) PID 1 logged unit's start job as done (Finished/Reached target)."""
    times = [
        int(e["__MONOTONIC_TIMESTAMP"])
        for e in booted.journal
        if e.get("MESSAGE_ID") == JOB_DONE and e.get("UNIT") == unit
        and e.get("JOB_TYPE") == "start" and e.get("JOB_RESULT") == "done"
    ]  # fmt: skip
    assert len(times) == 1, f"{unit}: start job done {len(times)} times in the journal"
    return times[0]


def test_rpm_i_ran_the_scriptlets_against_the_kernel_and_enabled_the_unit(booted: Booted) -> None:
    lines = booted.install.splitlines()
    # a fresh kernel has 0, 0 and no ip_vs; %post applied the sysctl file and loaded ip_vs at once
    assert "before arp_ignore=0 arp_announce=0 ip_vs=0" in lines, booted.install
    assert "after arp_ignore=1 arp_announce=2 ip_vs=1" in lines, booted.install
    # %post byte-compiled the private directory with the root's python3 and enabled the unit
    pyc = [int(line.split()[1]) for line in lines if line.startswith("pyc ")]
    assert pyc and pyc[0] > 0, booted.install
    wants = {f"wants {lib}/systemd/system/{UNIT}" for lib in ("/lib", "/usr/lib")}  # merged /usr
    assert wants & set(lines), booted.install
    assert booted.show[UNIT]["UnitFileState"] == "enabled"


def test_every_vip_is_on_lo_before_network_online_and_before_the_standin(booted: Booted) -> None:
    vip, online, standin = (booted.show[u] for u in (UNIT, "network-online.target", STANDIN))
    added = int(vip["ExecMainExitTimestampMonotonic"])  # `cgp-ipvs-vip up` exited: all added
    assert 0 < added <= int(vip["ActiveEnterTimestampMonotonic"])
    assert added < int(online["ActiveEnterTimestampMonotonic"])
    assert added < int(standin["ExecMainStartTimestampMonotonic"])
    assert int(booted.show["network-pre.target"]["ActiveEnterTimestampMonotonic"]) >= added
    # the same order in PID 1's own log, and the command's report of what it did
    assert _job_done(booted, UNIT) < _job_done(booted, "network-online.target")
    assert _job_done(booted, "network-online.target") < _job_done(booted, STANDIN)
    assert f"cgp-ipvs-vip: {VIPFILE}: 6 VIPs; 6 added to lo, 0 already there, 0 failed" in (
        _messages(booted, "cgp-ipvs-vip")
    )
    # what the stand-in found on lo when it started, and what lo held after boot
    for seen in (booted.probe["standin-lo"], booted.probe["lo"]):
        assert sorted(line.split()[3] for line in seen.splitlines()) == sorted(
            ["127.0.0.1/8", *(f"{vip}/32" for vip in VIPS)]
        ), seen


def test_the_arp_sysctls_of_the_package_are_applied_at_boot(booted: Booted) -> None:
    assert booted.probe["sysctl"].split() == ["arp_ignore", "1", "arp_announce", "2"]
    assert booted.show["systemd-sysctl.service"]["ActiveState"] == "active"


def test_ip_vs_is_loaded_at_boot_by_modules_load(booted: Booted) -> None:
    loaded = {line.split()[0] for line in booted.probe["modules"].splitlines()}
    assert {"ip_vs", "ip_vs_wlc"} <= loaded
    inserted = _messages(booted, "systemd-modules-load")
    assert "Inserted module 'ip_vs'" in inserted and "Inserted module 'ip_vs_wlc'" in inserted


def test_the_unit_is_active_exited_and_nothing_failed(booted: Booted) -> None:
    status = booted.probe["status"]
    assert "Active: active (exited)" in status, status
    assert re.search(
        rf"Loaded: loaded \((/usr)?/lib/systemd/system/{UNIT}; enabled; preset: enabled\)", status
    ), status
    assert booted.probe["failed"] == ""


def test_the_kernel_had_no_network_device_but_lo(booted: Booted) -> None:
    assert [line.split(":")[1].strip() for line in booted.probe["links"].splitlines()] == ["lo"]


def test_the_shutdown_was_clean_and_took_the_vips_off_lo(booted: Booted) -> None:
    assert f"cgp-ipvs-vip: {VIPFILE}: 6 VIPs; 6 removed from lo, 0 not there, 0 failed" in (
        _messages(booted, "cgp-ipvs-vip")
    )
    assert "systemd-shutdown[1]: All filesystems unmounted." in booted.console
    assert "systemd-shutdown[1]: Powering off." in booted.console


def test_rpm_e_keeps_the_edited_vip_file_as_rpmsave(booted: Booted) -> None:
    etc = booted.root / "etc/sysconfig"
    assert (etc / "vipaddrs.rpmsave").read_text() == MY_VIPS
    assert not (etc / "vipaddrs").exists()
    assert f"{VIPFILE} saved as {VIPFILE}.rpmsave" in booted.erase
    assert not (booted.root / PRIV.lstrip("/")).exists()  # %preun removed the byte-code too
