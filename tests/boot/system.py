"""What the boot test adds to the root around the package, and what it reads back after a boot.

Added: a stand-in for CommuniGate Pro's unit, ordered like it (after network-online.target),
that records the addresses it finds when it starts; a probe that records the booted system once
multi-user.target is reached and then powers off; optionally a network manager (systemd-networkd,
ordered like RHEL's NetworkManager) that gives a dummy "LAN" interface its address.

Read back: the probe's files, `systemctl show` properties, and the journal of that boot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.boot import machine

WORK = f"/{machine.WORK}"
PROBED = f"{WORK}/probe"  # where the probe and the stand-in write, during one boot
UNIT = "cgp-ipvs-vip.service"
STANDIN = "communigate-standin.service"
NETWORKD = "systemd-networkd.service"
WAIT_ONLINE = "systemd-networkd-wait-online.service"
LAN = ("dummy0", "192.0.2.10/24")
# PID 1's "job done" message (sd-messages.h SD_MESSAGE_UNIT_STARTED: Finished, Reached target).
JOB_DONE = "39f53479d3a045ac8e11786248231fbf"

# What CommuniGate Pro's unit (the LSB script's $network) is ordered by: after the network is up.
STANDIN_UNIT = f"""[Unit]
Description=Stand-in for CommuniGate Pro (ordered like its unit)
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'ip -o -4 address show >{PROBED}/standin-addresses'

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
SHOWN_UNITS = (UNIT, STANDIN, NETWORKD, WAIT_ONLINE, "network-pre.target",
               "network-online.target", "systemd-sysctl.service",
               "systemd-modules-load.service")  # fmt: skip

PROBE = f"""#!/bin/sh
cd {PROBED}
cat /proc/sys/kernel/random/boot_id >boot_id
systemctl status --no-pager --lines=0 {UNIT} >status 2>&1
systemctl show {" ".join(f"-p {p}" for p in ("Id", *SHOWN))} {" ".join(SHOWN_UNITS)} >show
systemctl --failed --plain --no-legend >failed
for k in arp_ignore arp_announce; do echo "$k $(cat /proc/sys/net/ipv4/conf/all/$k)"; done >sysctl
cat /proc/modules >modules
ip -o -d link show >links
ip -o -4 address show >addresses
"""

NETDEV = f"[NetDev]\nName={LAN[0]}\nKind=dummy\n"
NETWORK = f"[Match]\nName={LAN[0]}\n\n[Network]\nAddress={LAN[1]}\n"


@dataclass
class Boot:
    """What one systemd boot left: the probe's files, unit properties, its journal, console."""

    probe: dict[str, str]
    show: dict[str, dict[str, str]]
    journal: list[dict[str, str]]
    console: str

    def messages(self, ident: str) -> list[str]:
        """What program `ident` logged (a short-lived process may have no _SYSTEMD_UNIT)."""
        return [e.get("MESSAGE", "") for e in self.journal if e.get("SYSLOG_IDENTIFIER") == ident]

    def job_done(self, unit: str) -> int:
        """The monotonic time (us) PID 1 logged unit's start job as done."""
        times = [
            int(e["__MONOTONIC_TIMESTAMP"])
            for e in self.journal
            if e.get("MESSAGE_ID") == JOB_DONE and e.get("UNIT") == unit
            and e.get("JOB_TYPE") == "start" and e.get("JOB_RESULT") == "done"
        ]  # fmt: skip
        assert len(times) == 1, f"{unit}: start job done {len(times)} times in the journal"
        return times[0]

    def time(self, unit: str, prop: str) -> int:
        """A *TimestampMonotonic property of unit (us since boot; 0: never)."""
        return int(self.show[unit][f"{prop}TimestampMonotonic"])

    def addresses(self, when: str = "addresses") -> dict[str, list[str]]:
        """Interface -> IPv4 addresses, as the probe (or the stand-in, "standin-addresses") saw."""
        found: dict[str, list[str]] = {}
        for line in self.probe[when].splitlines():
            words = line.split()
            found.setdefault(words[1], []).append(words[3])
        return {name: sorted(addrs) for name, addrs in found.items()}


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _wants(root: Path, target: str, unit: Path) -> None:
    """What `systemctl enable` does for WantedBy=target (no systemctl needed on the host)."""
    link = root / "etc/systemd/system" / f"{target}.wants" / unit.name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(unit)


def add_probe_and_standin(root: Path) -> None:
    for name, text in ((STANDIN, STANDIN_UNIT), ("boot-probe.service", PROBE_UNIT)):
        _write(root / "etc/systemd/system" / name, text)
        _wants(root, "multi-user.target", Path("/etc/systemd/system") / name)
    _write(root / WORK.lstrip("/") / "probe.sh", PROBE, 0o755)


def add_network_manager(root: Path) -> None:
    """systemd-networkd with a LAN address on a dummy interface (which reaches nothing)."""
    _write(root / "etc/systemd/network/10-lan.netdev", NETDEV)
    _write(root / "etc/systemd/network/10-lan.network", NETWORK)
    units = Path("/lib/systemd/system")
    _wants(root, "multi-user.target", units / NETWORKD)
    _wants(root, "sockets.target", units / "systemd-networkd.socket")
    _wants(root, "network-online.target", units / WAIT_ONLINE)


def start_probe(root: Path) -> None:
    """An empty directory for the next boot's probe."""
    (root / PROBED.lstrip("/")).mkdir(parents=True)


def keep_probe(root: Path, name: str) -> Path:
    """Move this boot's probe files aside (the next boot writes new ones); return where."""
    probed = root / PROBED.lstrip("/")
    kept = probed.with_name(f"probe-{name}")
    probed.rename(kept)
    return kept


def read_boot(kept: Path, journal: list[dict[str, str]], console: Path) -> Boot:
    probe = {f.name: f.read_text() for f in kept.iterdir()}
    units: dict[str, dict[str, str]] = {}
    for block in probe.get("show", "").strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        units[props["Id"]] = props
    boot_id = probe.get("boot_id", "").strip().replace("-", "")
    return Boot(
        probe=probe,
        show=units,
        journal=[e for e in journal if e.get("_BOOT_ID") == boot_id],
        console=console.read_text(errors="replace"),
    )


def read_journal(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
