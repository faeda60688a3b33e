"""Gratuitous ARP frames, and the IPv6 neighbour advertisements built by nd.py, sent on a packet
socket per device (never a forked `arping` or `ndptool`)."""

from __future__ import annotations

import errno
import socket
import struct
from typing import Callable

from . import nd
from .nlwire import ipv4, packed

ETH_P_ARP = 0x0806
ARPHRD_ETHER = 1
_BROADCAST = b"\xff" * 6
FRAME = struct.Struct("!6s6sHHHBBH6s4s6s4s")  # an Ethernet ARP frame for IPv4, without padding
_FRAME_LEN = 60  # minimum Ethernet frame without FCS; some drivers do not pad short frames


def _packet_socket(dev: str) -> socket.socket:
    """A packet socket on `dev` that only sends: bound with protocol 0, it receives nothing."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.bind((dev, 0))
    except OSError:
        sock.close()
        raise
    return sock


class GarpSender:
    """Sends gratuitous ARP frames and unsolicited NAs; keeps one socket per device open, and
    its MAC until `forget_macs()` (called once per batch of operations, so a changed MAC is
    seen)."""

    def __init__(self) -> None:
        self._socks: dict[str, socket.socket] = {}
        self._macs: dict[str, bytes] = {}

    def forget_macs(self) -> None:
        self._macs.clear()

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()

    def send(self, ip: str, dev: str, reply: bool) -> None:
        """One ARP frame announcing `ip` from `dev`'s MAC; OSError as the kernel refuses it."""
        addr = ipv4(ip)

        def build(mac: bytes) -> bytes:
            # request: target MAC zero, as in Linux's own announcements; reply: our own MAC, as
            # iputils `arping -A` sends it: Linux takes a reply as gratuitous (and past its 1 s
            # ARP lock time) only when target MAC equals sender MAC (arp_is_garp)
            tha = mac if reply else b"\0" * 6
            frame = FRAME.pack(
                _BROADCAST, mac, ETH_P_ARP,
                ARPHRD_ETHER, 0x0800, 6, 4, 2 if reply else 1, mac, addr, tha, addr,
            )  # fmt: skip
            return frame.ljust(_FRAME_LEN, b"\0")

        self._send(dev, ETH_P_ARP, build)

    def send_na(self, ip: str, dev: str) -> None:
        """One unsolicited neighbour advertisement of the IPv6 address `ip` from `dev`'s MAC."""
        family, addr = packed(ip)
        if family != socket.AF_INET6:
            raise OSError(errno.EINVAL, f"not an IPv6 address: {ip!r}")
        self._send(dev, nd.ETH_P_IPV6, lambda mac: nd.frame(addr, mac))

    def _send(self, dev: str, proto: int, build: Callable[[bytes], bytes]) -> None:
        for attempt in (0, 1):
            sock = self._socks.get(dev)
            try:
                if sock is None:
                    sock = self._socks[dev] = _packet_socket(dev)
                mac = self._macs.get(dev)
                if mac is None:  # the device's MAC now
                    _name, _proto, _pkttype, hatype, mac = sock.getsockname()
                    if hatype != ARPHRD_ETHER or len(mac) != 6:
                        raise OSError(errno.EINVAL, f"{dev} is not an Ethernet device")
                    self._macs[dev] = mac
                sock.sendto(build(mac), (dev, proto))
                return
            except OSError as exc:
                # the device may have been replaced since the socket opened: open anew once
                if sock is not None:
                    sock.close()
                self._socks.pop(dev, None)
                self._macs.pop(dev, None)
                if attempt or exc.errno not in (errno.ENODEV, errno.ENXIO):
                    raise
