"""What a LAN host hears of ARP: a packet socket in its namespace, and the frame layout read and
written by the lab's own code (never the helper's), so a test compares the two.

`arp_sniffer` is a bound packet socket for ARP frames from now on; `ArpWatch` times the first
gratuitous ARP from one MAC for a set of VIPs by the kernel's receive timestamp, not by when
Python looked; `arp_frame` and `garp` lay frames out as the wire carries them.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Sequence

from cgp_ipvs_helper.kernel.netlink.sockets import SO_RCVBUFFORCE
from lab.netns import in_netns

ETH_P_ARP, SO_TIMESTAMPNS = 0x0806, 35  # not in the socket module
FRAME = struct.Struct("!6s6sHHHBBH6s4s6s4s")  # Ethernet header and ARP for IPv4, unpadded
BROADCAST, NO_MAC = b"\xff" * 6, bytes(6)
REQUEST, REPLY = 1, 2


def mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def arp_frame(
    op: int, sha: bytes, spa: str, tha: bytes = NO_MAC, tpa: str = "0.0.0.0", pad: bool = True
) -> bytes:
    """An Ethernet/IPv4 ARP frame broadcast from `sha` (padded to the Ethernet minimum)."""
    ip = socket.inet_aton
    fields = (1, 0x0800, 6, 4, op, sha, ip(spa), tha, ip(tpa))
    frame = FRAME.pack(BROADCAST, sha, ETH_P_ARP, *fields)
    return frame.ljust(60, b"\0") if pad else frame


def garp(mac: bytes, ip: str, reply: bool, pad: bool = True) -> bytes:
    """A gratuitous ARP for `ip` from `mac`: sender = target = `ip`; the reply form also names
    `mac` as the target, as `arping -A` sends it."""
    return arp_frame(REPLY if reply else REQUEST, mac, ip, mac if reply else NO_MAC, ip, pad)


def arp_sniffer(ns: str, dev: str = "eth0", rcvbuf: int = 0, stamps: bool = False) -> socket.socket:
    """A packet socket in `ns` for ARP frames on `dev` from now on (5 s receive timeout);
    `rcvbuf`: bytes it may hold, beyond net.core.rmem_max; `stamps`: the kernel's receive
    time with each frame (SO_TIMESTAMPNS)."""
    with in_netns(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    if stamps:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((dev, ETH_P_ARP))
    while select.select([sock], [], [], 0)[0]:  # only frames from now on count
        sock.recv(2048)
    sock.settimeout(5)
    return sock


def announcing(sock: socket.socket, ip: str, count: int, timeout: float = 5.0) -> list[bytes]:
    """The next `count` ARP frames `sock` receives with `ip` as their sender address."""
    frames, deadline = [], time.monotonic() + timeout
    while len(frames) < count and time.monotonic() < deadline:
        frame = sock.recv(2048)
        if frame[28:32] == socket.inet_aton(ip):
            frames.append(frame)
    return frames


class ArpWatch:
    """Gratuitous ARP for the (IPv4) VIPs from one MAC, as a host in `ns` receives them."""

    def __init__(self, ns: str, mac: str, vips: Sequence[str]) -> None:
        self.mac = mac_bytes(mac)
        self.vips = {socket.inet_aton(v) for v in vips if ":" not in v}
        self.sock = arp_sniffer(ns, rcvbuf=8 << 20, stamps=True)

    def first(self, timeout: float = 10.0) -> float | None:
        """The kernel receive time (time.time() scale) of the next gratuitous ARP for a VIP."""
        deadline = time.monotonic() + timeout
        with self.sock:
            while select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
                frame, ancillary, _flags, _addr = self.sock.recvmsg(2048, socket.CMSG_SPACE(16))
                f = FRAME.unpack_from(frame) if len(frame) >= FRAME.size else (b"",) * 12
                if f[1] == f[8] == self.mac and f[9] == f[11] and f[9] in self.vips:
                    stamps = [d for lvl, kind, d in ancillary if kind == SO_TIMESTAMPNS]
                    sec, nsec = struct.unpack_from("@ll", stamps[0]) if stamps else (time.time(), 0)
                    return sec + nsec / 1e9
        return None
