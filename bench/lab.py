"""Measuring tools for the benchmarks that run inside user-mode Linux.

The lab (tests/lab) builds the LAN and drives the helper (`HelperProcess(..., timed=True)`);
what is added here is what timing needs:
- `ArpWatch`: a packet socket on a client's eth0 with kernel receive timestamps, so "the first
  gratuitous ARP seen on the LAN" is the moment the frame reached the client, not the moment
  Python looked;
- `fresh_lan`: new namespaces for every measurement (fe1 at 192.0.2.11 and a client);
- `snapshot`: what a namespace's kernel holds, to compare two ways of reaching a state.
"""

from __future__ import annotations

import itertools
import select
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cgp_ipvs_helper.model import KernelState
from cgp_ipvs_helper.netlink import NetlinkKernel
from tests.lab.lan import Host, Lan
from tests.lab.netns import in_netns

FE_IP = "192.0.2.11"
CLIENT_IP = "192.0.2.100"
ETH_P_ARP = 0x0806
SO_TIMESTAMPNS = 35  # include/uapi/asm-generic/socket.h; not exported by the socket module
SO_RCVBUFFORCE = 33
_ARP = struct.Struct("!6s6sHHHBBH6s4s6s4s")
_TIMESPEC = struct.Struct("@ll")
_names = itertools.count()


def lan_prefix(tag: str) -> str:
    """A Lan prefix unique in this boot (at most 8 characters, as Lan requires)."""
    return f"{tag[:3]}{next(_names)}"[:8]


@contextmanager
def fresh_lan(tag: str, **kw: Any) -> Iterator[tuple[Lan, Host, Host]]:
    """A new LAN with the frontend fe (192.0.2.11) and a client (192.0.2.100)."""
    with Lan(lan_prefix(tag), **kw) as lan:
        fe = lan.add_host("fe", FE_IP)
        client = lan.add_host("client", CLIENT_IP)
        yield lan, fe, client


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class ArpWatch:
    """Gratuitous ARP frames from one MAC, as a client on the LAN receives them."""

    def __init__(self, client: Host, sender_mac: str, vips: Sequence[str]) -> None:
        self.mac = _mac(sender_mac)
        self.vips = {socket.inet_aton(v) for v in vips}
        with in_netns(client.ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        try:
            self.sock.bind(("eth0", ETH_P_ARP))
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self) -> ArpWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def clear(self) -> None:
        """Drop whatever arrived so far: only frames after the clock starts count."""
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(2048)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def first(self, timeout: float = 10.0) -> float | None:
        """The kernel receive time (time.time() scale) of the next gratuitous ARP for a VIP."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return None
            frame, ancdata, _flags, _addr = self.sock.recvmsg(2048, socket.CMSG_SPACE(16))
            if len(frame) < 14 + 28:
                continue
            _dst, src, etype, _ht, _pt, _hl, _pl, _op, sha, spa, _tha, tpa = _ARP.unpack_from(frame)
            if etype != ETH_P_ARP or src != self.mac or sha != self.mac:
                continue
            if spa != tpa or spa not in self.vips:
                continue
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(data)
                    return sec + nsec / 1e9
            return time.time()


@dataclass(frozen=True)
class Snapshot:
    """What a namespace's kernel holds, in a form two runs can be compared by."""

    services: frozenset
    dests: frozenset
    daemons: frozenset
    lo: frozenset
    eth0: frozenset

    @property
    def summary(self) -> str:
        return (
            f"{len(self.services)} services, {len(self.dests)} real servers, "
            f"{len(self.eth0)} addresses on eth0, {len(self.lo)} on lo"
        )


def snapshot(host: Host) -> Snapshot:
    """Read IPVS and addresses of `host` over netlink (the helper's own reader)."""
    with in_netns(host.ns):
        kernel = NetlinkKernel()
        try:
            state: KernelState = kernel.observe(frozenset())
        finally:
            kernel.close()
    return Snapshot(
        state.services,
        state.dests,
        state.daemons,
        frozenset(a.ip for a in state.addresses_on("lo")),
        frozenset(a.ip for a in state.addresses_on("eth0")),
    )


def progress(text: str) -> None:
    """One line of progress on the console (streamed to the host as the boot goes on)."""
    print(f"  {text}", flush=True)
