"""network-scripts as RHEL's ifup/ifdown run them, in a private directory.

The project's ifup-lo, ifdown-lo and ifvip-utils beside stub ifup-eth/ifdown-eth (which log
their call and only set lo up or down), and `cgp-ipvs-vip`, the RPM's launcher run with this
checkout as its private directory. The kernel tests of the scripts and the boot-time aliases
benchmark both use this one copy.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .uml import REPO_ROOT

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
