"""What the kernel benchmarks share inside user-mode Linux, on top of the lab (lab).

`standby` gives fresh namespaces (fe at 192.0.2.11 and a client on a LAN) with a real-mode
helper on fe, started and in standby: every ACTIVATE measured starts from there (the helper's,
the probe's, and, with the helper killed, the classic script's and the limit's). `ArpWatch`
times the first gratuitous ARP by the kernel's receive timestamp on the client, not when Python
looked; `snapshot` is what a namespace's kernel holds, to compare two ways of reaching a state.
"""

from __future__ import annotations

import itertools
import select
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from cgp_ipvs_helper.kernel.netlink.kernel import NetlinkKernel
from cgp_ipvs_helper.kernel.netlink.sockets import SO_RCVBUFFORCE
from lab.driver import HelperProcess, Response, helper_argv
from lab.group import expand
from lab.lan import Host, Lan
from lab.netns import in_netns

FE_IP = "192.0.2.11"
ETH_P_ARP, SO_TIMESTAMPNS = 0x0806, 35  # not in the socket module
_ARP = struct.Struct("!6s6sHHHBBH6s4s6s4s")
_names = itertools.count()


def lan_prefix(tag: str) -> str:
    """A Lan prefix (or namespace name) unique in this boot, at most 8 characters."""
    return f"{tag[:3]}{next(_names)}"[:8]


def vips_in(vipfile: str) -> list[str]:
    with open(vipfile) as f:
        return expand(f.read().split())


def members_of(count: int) -> list[str]:
    """This frontend first, then addresses on the LAN that nobody holds (IPVS accepts them)."""
    return [FE_IP] + [f"192.0.2.{12 + i}" for i in range(count - 1)]


@contextmanager
def standby(
    tag: str, vipfile: str, *options: str, argv: Sequence[str] = (), ipv6: bool = False
) -> Iterator[tuple[HelperProcess, Host, Host]]:
    """(helper, fe, client): `python -m cgp_ipvs_helper` (or `argv`) -f vipfile -i eth0
    `options`, answering."""
    with Lan(lan_prefix(tag), ipv6=ipv6) as lan:
        fe, client = lan.add_host("fe", FE_IP), lan.add_host("client", "192.0.2.100")
        args = [*(argv or helper_argv()), "-f", vipfile, "-i", "eth0", *options]
        helper = HelperProcess(fe, argv=args, timed=True)
        try:
            helper.wait_started(timeout=180)
            yield helper, fe, client
        finally:
            helper.kill()


def activate(helper: HelperProcess, members: Sequence[str], vips: int) -> Response:
    """ACTIVATE, timed from writing the line to reading the OK."""
    reply = helper.exchange("ACTIVATE " + " ".join(members), timeout=180)
    if f" OK active vips={vips} " not in reply.line + " ":
        raise RuntimeError(f"ACTIVATE answered {reply.line!r}")
    return reply


class ArpWatch:
    """Gratuitous ARP for the (IPv4) VIPs from one MAC, as a client receives them."""

    def __init__(self, client: Host, mac: str, vips: Sequence[str]) -> None:
        self.mac = bytes.fromhex(mac.replace(":", ""))
        self.vips = {socket.inet_aton(v) for v in vips if ":" not in v}
        with in_netns(client.ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        self.sock.bind(("eth0", ETH_P_ARP))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        while select.select([self.sock], [], [], 0)[0]:  # only frames from now on count
            self.sock.recv(2048)

    def first(self, timeout: float = 10.0) -> float | None:
        """The kernel receive time (time.time() scale) of the next gratuitous ARP for a VIP."""
        deadline = time.monotonic() + timeout
        with self.sock:
            while select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
                frame, ancillary, _flags, _addr = self.sock.recvmsg(2048, socket.CMSG_SPACE(16))
                f = _ARP.unpack_from(frame) if len(frame) >= _ARP.size else (b"",) * 12
                if f[1] == f[8] == self.mac and f[9] == f[11] and f[9] in self.vips:
                    stamps = [d for lvl, kind, d in ancillary if kind == SO_TIMESTAMPNS]
                    sec, nsec = struct.unpack_from("@ll", stamps[0]) if stamps else (time.time(), 0)
                    return sec + nsec / 1e9
        return None


def snapshot(host: Host) -> tuple[frozenset, ...]:
    """IPVS services, real servers, sync daemons and addresses of `host` (the helper's reader)."""
    with in_netns(host.ns):
        kernel = NetlinkKernel()
        try:
            s = kernel.observe(frozenset())
        finally:
            kernel.close()
    return s.services, s.dests, s.daemons, frozenset((a.dev, a.ip) for a in s.addresses)
