"""Benchmark 2 (inside UML): the VIPs of a /24 on lo at boot, one process vs one per address.

Each method runs in a fresh network namespace and must leave all 256 addresses on lo:
- baseline: a shell loop of 256 `ip address add A/32 dev lo` (what an admin script does);
- `cgp-ipvs-vip -f FILE up` (the RPM's launcher, packaging/cgp-ipvs-vip.py, as ifup-lo calls
  it);
- network-scripts/ifup-lo with a stub ifup-eth (as tests/kernel/test_network_scripts.py runs it);
- for reference: `ip -batch` (one iproute2 process for all), and `cgp-ipvs-vip check` (the
  Python start-up and file parsing alone, no kernel).
Every process is forked from a thread already inside the namespace, so no `ip netns exec` cost
is counted for anyone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, Callable

from tests.lab.netns import create_netns, delete_netns, in_netns
from tests.lab.uml import REPO_ROOT

from .lab import progress
from .report import Table, median, ratio, result, secs, spread, times

VIP_FILE = "203.0.113.0/24\n"
VIPS = [f"203.0.113.{i}" for i in range(256)]
STUB = """#!/bin/sh
# stub of the stock {name}: log the call, take lo {state}, nothing else
echo "{name} $*" >>"$IFVIP_TEST_LOG"
ip link set lo {state}
"""
LOOP = (
    "i=0; while [ $i -lt 256 ]; do "
    "ip address add 203.0.113.$i/32 dev lo || exit 1; i=$((i+1)); done"
)


class Workspace:
    """The VIP file, a private network-scripts copy with stubs, and the launcher."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.file = os.path.join(base, "vipaddrs")
        with open(self.file, "w") as f:
            f.write(VIP_FILE)
        self.scripts = os.path.join(base, "network-scripts")
        os.mkdir(self.scripts)
        for name in ("ifup-lo", "ifvip-utils"):
            shutil.copy2(REPO_ROOT / "network-scripts" / name, os.path.join(self.scripts, name))
        for name, state in (("ifup-eth", "up"), ("ifdown-eth", "down")):
            path = os.path.join(self.scripts, name)
            with open(path, "w") as f:
                f.write(STUB.format(name=name, state=state))
            os.chmod(path, 0o755)
        self.launcher = str(REPO_ROOT / "packaging" / "cgp-ipvs-vip.py")
        self.cmd = os.path.join(base, "cgp-ipvs-vip")
        with open(self.cmd, "w") as f:
            f.write(f'#!/bin/sh\nexec {sys.executable} {self.launcher} "$@"\n')
        os.chmod(self.cmd, 0o755)
        self.batch = os.path.join(base, "batch")
        with open(self.batch, "w") as f:
            f.write("".join(f"address add {ip}/32 dev lo\n" for ip in VIPS))
        self.env = {
            **os.environ,
            "IFVIP_FILE": self.file,
            "IFVIP_CMD": self.cmd,
            "IFVIP_TEST_LOG": os.path.join(base, "eth.log"),
            "CGP_IPVS_HELPER_LIB": str(REPO_ROOT),
        }

    def methods(self) -> dict[str, tuple[list[str], bool]]:
        """name -> (argv, whether it must leave the 256 addresses on lo)."""
        return {
            "loop": (["sh", "-c", LOOP], True),
            "vip": ([sys.executable, self.launcher, "-f", self.file, "up"], True),
            "ifup": ([os.path.join(self.scripts, "ifup-lo"), "ifcfg-lo", "boot"], True),
            "batch": (["ip", "-batch", self.batch], True),
            "check": ([sys.executable, self.launcher, "-f", self.file, "check"], False),
        }


def _count_on_lo(ns: str) -> int:
    with in_netns(ns):
        out = subprocess.run(
            ["ip", "-4", "-o", "address", "show", "dev", "lo"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return sum(1 for ip in VIPS if f" {ip}/32 " in out)


_runs = 0


def timed(argv: Sequence[str], env: dict[str, str], expect: bool) -> float:
    """Run argv once in a fresh namespace; seconds from fork to exit."""
    global _runs
    _runs += 1
    ns = f"bal{os.getpid()}-{_runs}"
    create_netns(ns)
    try:
        with in_netns(ns):
            t0 = time.monotonic()
            proc = subprocess.run(list(argv), env=env, capture_output=True, text=True, check=False)
            spent = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr[-300:]}")
        if expect and _count_on_lo(ns) != len(VIPS):
            raise RuntimeError(f"{argv[0]} left {_count_on_lo(ns)} of 256 VIPs on lo")
        return spent
    finally:
        delete_netns(ns)


def run(reps: int) -> dict[str, Any]:
    t_start = time.monotonic()
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as base:
        work = Workspace(base)
        methods = work.methods()
        for rep in range(reps):
            for name, (argv, expect) in methods.items():
                samples.setdefault(name, []).append(timed(argv, work.env, expect))
            progress(
                f"aliases rep {rep + 1}/{reps}: "
                + ", ".join(f"{n} {samples[n][-1]:.2f} s" for n in methods)
            )
    return _report(samples, reps, time.monotonic() - t_start)


def _report(samples: dict[str, list[float]], reps: int, seconds: float) -> dict[str, Any]:
    med: dict[str, float] = {k: median(v) for k, v in samples.items()}
    table = Table(
        "Boot-time aliases: a /24 (256 VIPs) on lo (inside user-mode Linux)",
        ["method", "processes", "seconds", "min-max", "speed-up vs loop"],
    )
    rows: list[tuple[str, str, str, Callable[[], str]]] = [
        ("baseline: shell loop, one `ip address add` each", "loop", "256 + sh", lambda: "1x"),
        ("cgp-ipvs-vip -f FILE up", "vip", "1", lambda: times(ratio(med["loop"], med["vip"]))),
        (
            "ifup-lo (stub ifup-eth) -> cgp-ipvs-vip up",
            "ifup",
            "~6 (bash, stub, ip, python)",
            lambda: times(ratio(med["loop"], med["ifup"])),
        ),
        ("reference: ip -batch (one iproute2 process)", "batch", "1", lambda: "-"),
        ("reference: cgp-ipvs-vip check (start + parse only)", "check", "1", lambda: "-"),
    ]
    for label, key, procs, speed in rows:
        table.add(label, procs, secs(med[key]), spread(samples[key], 1, 2), speed())
    table.notes += [
        f"Median of {reps} runs, each in a fresh network namespace; every method must leave "
        "exactly the 256 addresses on lo (checked).",
        f"cgp-ipvs-vip's time is mostly Python start-up and imports: `check` alone takes "
        f"{secs(med['check'])} s; applying the /24 in one netlink batch adds "
        f"{secs(max(0.0, med['vip'] - med['check']))} s.",
        "Forks and page faults are much slower in user-mode Linux than on bare metal: the loop "
        "pays one fork+exec per address, Python pays its start-up once.",
    ]
    raw = {"reps": reps, "samples_s": samples, "median_s": med}
    return result("aliases", [table], [], raw, seconds)
