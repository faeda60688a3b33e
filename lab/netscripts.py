"""network-scripts as RHEL's ifup/ifdown run them, in a private directory.

The project's ifup-lo, ifdown-lo and ifvip-utils beside stub ifup-eth/ifdown-eth (which log
their call and only set lo up or down), and `cgp-ipvs-vip`, the RPM's launcher run with this
checkout as its private directory. The kernel tests of the scripts and the boot-time aliases
benchmark both use this one copy, and time its ways of putting a /24 on lo (`ways`, `timed`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .box import addresses
from .lan import unique
from .netns import fresh_netns, in_netns
from .uml import REPO_ROOT

SUBNET = [f"203.0.113.{i}" for i in range(256)]  # the /24 the ways put on lo
LOOP = "i=0; while [ $i -lt 256 ]; do ip address add 203.0.113.$i/32 dev lo || exit 1; "

STUB = """#!/bin/sh
# stub of the stock {name}: log the call, take lo {state}, nothing else
echo "{name} $*" >>"$IFVIP_TEST_LOG"
ip link set lo {state}
"""


class Scripts:
    """`dir` (the scripts), `cmd` (cgp-ipvs-vip), `file` (the VIP file), `log` (stub calls)."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "network-scripts"
        self.dir.mkdir()
        for name in ("ifup-lo", "ifdown-lo", "ifvip-utils"):
            shutil.copy2(REPO_ROOT / "network-scripts" / name, self.dir / name)
        for name, state in (("ifup-eth", "up"), ("ifdown-eth", "down")):
            (self.dir / name).write_text(STUB.format(name=name, state=state))
            (self.dir / name).chmod(0o755)
        self.launcher = base / "cgp-ipvs-vip.py"  # the RPM's launcher, by the name it chooses by
        self.launcher.symlink_to(REPO_ROOT / "packaging" / "launcher.py")
        self.cmd = base / "cgp-ipvs-vip"
        self.cmd.write_text(f'#!/bin/sh\nexec {sys.executable} {self.launcher} "$@"\n')
        self.cmd.chmod(0o755)
        self.file = base / "vipaddrs"
        self.log = base / "eth.log"
        self.log.touch()

    def env(self) -> dict[str, str]:
        """The environment the scripts and the launcher read their paths from."""
        return {
            **os.environ,
            "IFVIP_FILE": str(self.file),
            "IFVIP_CMD": str(self.cmd),
            "IFVIP_TEST_LOG": str(self.log),
            "CGP_IPVS_HELPER_LIB": str(REPO_ROOT),
        }

    def ways(self) -> dict[str, list[str]]:
        """The file set to the /24, the ways to put it on lo: the shell loop of one `ip address
        add` each, cgp-ipvs-vip up, ifup-lo, one `ip -batch`, and cgp-ipvs-vip check (start-up
        and parsing only)."""
        self.file.write_text("203.0.113.0/24\n")
        batch = self.file.with_name("batch")
        batch.write_text("".join(f"address add {ip}/32 dev lo\n" for ip in SUBNET))
        return {
            "loop": ["sh", "-c", LOOP + "i=$((i+1)); done"],
            "vip": [sys.executable, str(self.launcher), "-f", str(self.file), "up"],
            "ifup": [str(self.dir / "ifup-lo"), "ifcfg-lo", "boot"],
            "batch": ["ip", "-batch", str(batch)],
            "check": [sys.executable, str(self.launcher), "-f", str(self.file), "check"],
        }

    def timed(self, argv: list[str]) -> float:
        """`argv` run once in a fresh namespace (forked from a thread inside it): seconds from
        fork to exit; it must leave exactly the /24 on lo (`check` none of it)."""
        ns = unique("als")
        with fresh_netns(ns), in_netns(ns):
            t0 = time.monotonic()
            proc = subprocess.run(argv, env=self.env(), capture_output=True, text=True)
            spent = time.monotonic() - t0
            count = len(set(addresses("lo")) & {f"{ip}/32" for ip in SUBNET})
        if proc.returncode != 0 or count != (0 if argv[-1] == "check" else len(SUBNET)):
            raise RuntimeError(f"{argv} left {count} VIPs on lo: {proc.stderr[-300:]}")
        return spent
