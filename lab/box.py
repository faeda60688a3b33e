"""Two fresh network namespaces on a veth pair: where a kernel test exercises one subsystem.

"ours" (eth0 192.0.2.10/24, MAC OUR_MAC) is where the kernel under test works; "peer" (eth0
192.0.2.20/24) sees its frames. `open_box()` yields with the calling thread inside "ours", so a
NetlinkKernel opened there, and every tool the test runs, belong to it. The read helpers go
through the usual tools (ip, ipvsadm), never through the code under test.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cgp_ipvs_helper.errors import KernelError
from cgp_ipvs_helper.kernel.netlink.kernel import NetlinkKernel
from cgp_ipvs_helper.plan.operations import Operation
from lab.netns import fresh_netns, in_netns

OUR_IP, PEER_IP = "192.0.2.10", "192.0.2.20"
OUR_MAC = "02:00:00:00:01:10"
_names = itertools.count()


@dataclass
class Box:
    ours: str  # netns of the kernel under test; the test's thread is in it
    peer: str  # netns on the other end of eth0
    kernel: NetlinkKernel


def ip_batch(commands: str) -> None:
    subprocess.run(["ip", "-batch", "-"], input=commands, text=True, check=True)


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def sysctl(name: str) -> str:
    return run("sysctl", "-n", name).strip()


def ipvsadm_rules() -> set[str]:
    """`ipvsadm -Sn`, one rule per line."""
    return set(run("ipvsadm", "-S", "-n").splitlines())


@contextmanager
def open_box() -> Iterator[Box]:
    """A new box with a NetlinkKernel in "ours"; both namespaces are deleted afterwards."""
    n = next(_names)
    ours, peer = f"nl{os.getpid()}-{n}a", f"nl{os.getpid()}-{n}b"
    with fresh_netns(ours, peer):
        with in_netns(peer):
            ip_batch("link set lo up\n")
        with in_netns(ours):
            ip_batch(
                "link set lo up\n"
                f"link add eth0 address {OUR_MAC} type veth peer name eth0 netns {peer}\n"
                f"address add {OUR_IP}/24 dev eth0\n"
                "link set eth0 up\n"
            )
        with in_netns(peer):
            ip_batch(f"address add {PEER_IP}/24 dev eth0\nlink set eth0 up\n")
        with in_netns(ours):
            kernel = NetlinkKernel()
            try:
                yield Box(ours, peer, kernel)
            finally:
                kernel.close()


def addresses(dev: str, six: bool = False) -> list[str]:
    """`ip -o address` of `dev` in kernel order: IPv4 as 'a.b.c.d/len'; IPv6 (`six`) the global
    ones as 'addr/len scope global flags'."""
    if not six:
        return re.findall(r"inet (\S+)", run("ip", "-4", "-o", "address", "show", "dev", dev))
    out = run("ip", "-6", "-o", "address", "show", "dev", dev, "scope", "global")
    return [re.sub(r"^\d+: \S+\s+inet6 ", "", ln).split("\\")[0].strip() for ln in out.splitlines()]


def peer_neigh(box: Box, ip: str) -> str:
    """The peer's neighbour entry for `ip` on eth0, as `ip neigh show` prints it."""
    with in_netns(box.peer):
        return run("ip", "neigh", "show", ip, "dev", "eth0").strip()


def wait_neigh(box: Box, ip: str, want: str, timeout: float = 2.0) -> str:
    """The peer's entry for `ip` once it holds `want` (a MAC), or as it is after `timeout`."""
    deadline = time.monotonic() + timeout
    seen = peer_neigh(box, ip)
    while want not in seen and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = peer_neigh(box, ip)
    return seen


def refused(op: Operation, kernel: NetlinkKernel) -> KernelError:
    """The KernelError `kernel` raises for `op` (AssertionError if it takes `op`)."""
    try:
        kernel.apply(op)
    except KernelError as exc:
        assert exc.op == op, (exc.op, op)
        return exc
    raise AssertionError(f"the kernel took {op}")
