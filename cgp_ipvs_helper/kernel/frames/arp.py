"""Gratuitous ARP frames, and the IPv6 neighbour advertisements built by nd.py, sent on a packet
socket per device (never a forked `arping` or `ndptool`).

A round of frames for one device goes out in one sendmmsg (mmsg.py) addressed by interface
index: no system call per frame, and no interface lookup per frame (Python's sendto((name,
proto)) asks the kernel for the index of `name` on every call: 1,024 system calls for the 512
frames of a /24). Frames are built once per device MAC and kept, and so is the last round's C
layout, so a repeated round costs one call.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import struct
from collections.abc import Sequence

from cgp_ipvs_helper.kernel.frames import mmsg, nd
from cgp_ipvs_helper.kernel.netlink.wire import ipv4, packed

ETH_P_ARP = 0x0806
ARPHRD_ETHER = 1
_BROADCAST = b"\xff" * 6
FRAME = struct.Struct("!6s6sHHHBBH6s4s6s4s")  # an Ethernet ARP frame for IPv4, without padding
_FRAME_LEN = 60  # minimum Ethernet frame without FCS; some drivers do not pad short frames
_REPLACED = (errno.ENODEV, errno.ENXIO)  # the device went away or was replaced: open anew once
_MAX_FRAMES = 8192  # kept frames per device (VIPs x 2); beyond that the cache starts afresh
REQUEST, REPLY, NA = 1, 2, 3  # the kinds of frame: ARP request and reply form, IPv6 NA
_PROTO = {REQUEST: ETH_P_ARP, REPLY: ETH_P_ARP, NA: nd.ETH_P_IPV6}
SIOCGIFHWADDR = 0x8927
_IFREQ = struct.Struct("16sH14s8x")  # struct ifreq: the name, a struct sockaddr (hardware type)

Request = tuple[str, int, bytes]  # device, kind of frame, the address it announces


def frame(mac: bytes, ip: bytes, reply: bool) -> bytes:
    """A gratuitous ARP frame announcing `ip` from `mac`, padded to the Ethernet minimum.

    Request form: target MAC zero, as in Linux's own announcements. Reply form: our own MAC as
    target, as iputils `arping -A` sends it: Linux takes a reply as gratuitous (and past its 1 s
    ARP lock time) only when target MAC equals sender MAC (arp_is_garp).
    """
    tha = mac if reply else b"\0" * 6
    return FRAME.pack(
        _BROADCAST, mac, ETH_P_ARP, ARPHRD_ETHER, 0x0800, 6, 4, 2 if reply else 1, mac, ip, tha, ip
    ).ljust(_FRAME_LEN, b"\0")


def sockaddr_ll(index: int, proto: int) -> bytes:
    """family, protocol (big-endian), ifindex, hatype, pkttype, halen, address: to send only."""
    return (
        struct.pack("=H", socket.AF_PACKET)
        + struct.pack("!H", proto)
        + struct.pack("=iHBB8s", index, 0, 0, 0, b"")
    )


class _Device:
    """An open packet socket on one device: bound with protocol 0, it receives nothing."""

    def __init__(self, dev: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self.sock.bind((dev, 0))
            index = socket.if_nametoindex(dev)
        except OSError:
            self.sock.close()
            raise
        self.dev = dev
        self.mac: bytes | None = None  # the device's MAC as last read, what the frames hold
        self.fresh = False  # read in this round (every round reads it once)
        self.frames: dict[tuple[int, bytes], bytes] = {}
        self.names = {kind: sockaddr_ll(index, proto) for kind, proto in _PROTO.items()}
        self.last: mmsg.Round | None = None
        self.requests: list[Request] = []  # those self.last was built for

    def read_mac(self) -> None:
        """The device's MAC, asked by name in one system call (getsockname() makes two: Python
        asks for the name of the bound index too). ENODEV if no device has the name; a device
        replaced under the same name (a new index) refuses the socket's frames, and the round
        goes out again on a new socket (`FrameSender._send_run`)."""
        request = _IFREQ.pack(self.dev.encode(), 0, b"")
        _name, hatype, address = _IFREQ.unpack(fcntl.ioctl(self.sock, SIOCGIFHWADDR, request))
        mac = address[:6]
        if hatype != ARPHRD_ETHER:
            raise OSError(errno.EINVAL, f"{self.dev} is not an Ethernet device")
        if mac != self.mac:
            self.frames.clear()
            self.last = None
        self.mac, self.fresh = mac, True

    def frame(self, kind: int, addr: bytes) -> bytes:
        found = self.frames.get((kind, addr))
        if found is None:
            assert self.mac is not None
            if len(self.frames) >= _MAX_FRAMES:
                self.frames.clear()
            if kind == NA:
                found = nd.frame(addr, self.mac)
            else:
                found = frame(self.mac, addr, kind == REPLY)
            self.frames[(kind, addr)] = found
        return found

    def round(self, requests: Sequence[Request]) -> mmsg.Round:
        """These frames laid out for sendmmsg: the last round again if it is the same (the
        same requests, usually the very values it was built from, for the same MAC)."""
        if self.last is not None and self.requests == requests:
            return self.last
        items = [(self.names[kind], self.frame(kind, addr)) for _dev, kind, addr in requests]
        if self.last is None or self.last.items != items:
            self.last = mmsg.Round(items)
        self.requests = list(requests)
        return self.last

    def send(self, requests: Sequence[Request], failed: dict[int, int], first: int) -> int:
        """Send the frames in order, each failure into `failed` at `first` + its index. Stops at
        a frame refused because the device was replaced and returns its index (to retry on a
        new socket); len(requests) once every frame has its outcome."""
        fd = self.sock.fileno()
        batch = self.round(requests)
        i = 0
        while i < len(requests):
            try:
                if mmsg.available():
                    i += batch.send(fd, i)
                    continue
                _dev, kind, _addr = requests[i]  # without sendmmsg: one frame a call
                self.sock.sendto(batch.items[i][1], (self.dev, _PROTO[kind]))
            except OSError as exc:
                failed[first + i] = exc.errno or errno.EIO
                if exc.errno in _REPLACED:
                    return i
            i += 1
        return i


class FrameSender:
    """Sends gratuitous ARP frames and unsolicited NAs; keeps one socket per device open, and
    its MAC until `forget_macs()` (called once per batch of operations, so a changed MAC is
    seen). A frame is a request of the netlink kernel's "frames" channel: consecutive ones are
    sent together by batch(), a whole announcement round at once (`limit` 0: one sendmmsg per
    device's run, whatever its length)."""

    limit = 0

    def __init__(self) -> None:
        self._devs: dict[str, _Device] = {}
        self._last: tuple[list[Request], list[tuple[int, int]]] = ([], [])  # requests, runs

    def forget_macs(self) -> None:
        for device in self._devs.values():
            device.fresh = False

    def close(self) -> None:
        for device in self._devs.values():
            device.sock.close()
        self._devs.clear()

    def arp(self, ip: str, dev: str, reply: bool) -> Request:
        """An ARP frame announcing the IPv4 address `ip` on `dev`, checked (socket open, MAC
        read): OSError as the kernel refuses, with a reason of its own for a non-Ethernet one."""
        addr = ipv4(ip)
        self._device(dev, retry=True)
        return (dev, REPLY if reply else REQUEST, addr)

    def na(self, ip: str, dev: str) -> Request:
        """An unsolicited neighbour advertisement of the IPv6 address `ip` on `dev`, checked."""
        family, addr = packed(ip)
        if family != socket.AF_INET6:
            raise OSError(errno.EINVAL, f"not an IPv6 address: {ip!r}")
        self._device(dev, retry=True)
        return (dev, NA, addr)

    def prepare(self, requests: Sequence[Request]) -> None:
        """Build these frames and lay each device's run out for sendmmsg, as batch() of the
        same requests will want them."""
        for start, end in _runs(requests):
            device = self._devs.get(requests[start][0])
            if device is not None and device.fresh:
                device.round(requests[start:end]).warm(device.sock.fileno())

    def batch(self, requests: Sequence[Request]) -> dict[int, int]:
        """Send the frames in order, one sendmmsg per run of one device; {index: errno} of the
        frames the kernel refused."""
        failed: dict[int, int] = {}
        if requests != self._last[0]:  # (usually the prepared round's very requests)
            self._last = (list(requests), _runs(requests))
        for start, end in self._last[1]:
            self._send_run(requests, start, end, failed)
        return failed

    def failed(self, codes: set[int]) -> None:
        """Nothing to forget: batch() itself opens a replaced device's socket anew."""

    def _send_run(
        self, requests: Sequence[Request], start: int, end: int, failed: dict[int, int]
    ) -> None:
        dev = requests[start][0]
        retried = False
        while start < end:
            try:
                device = self._device(dev, retry=False)
                stopped = start + device.send(requests[start:end], failed, start)
            except OSError as exc:
                if exc.errno in _REPLACED and not retried:
                    self._drop(dev)
                    retried = True
                    continue
                for i in range(start, end):
                    failed[i] = exc.errno or errno.EIO
                return
            if stopped >= end:
                return
            self._drop(dev)  # replaced since the socket opened: once more on a new one
            if retried:
                start = stopped + 1  # its failure stays recorded
            else:
                del failed[stopped]
                retried = True
                start = stopped

    def _device(self, dev: str, retry: bool) -> _Device:
        """The open device with its MAC of this round; with `retry`, opened anew once if it was
        replaced since."""
        for attempt in (0, 1):
            device = self._devs.get(dev)
            try:
                if device is None:
                    device = self._devs[dev] = _Device(dev)
                if not device.fresh:
                    device.read_mac()
                return device
            except OSError as exc:
                self._drop(dev)
                if attempt or not retry or exc.errno not in _REPLACED:
                    raise
        raise AssertionError("unreachable")

    def _drop(self, dev: str) -> None:
        device = self._devs.pop(dev, None)
        if device is not None:
            device.sock.close()


def _runs(requests: Sequence[Request]) -> list[tuple[int, int]]:
    """(start, end) of each run of consecutive requests for one device."""
    runs = []
    start = 0
    while start < len(requests):
        end = start + 1
        while end < len(requests) and requests[end][0] == requests[start][0]:
            end += 1
        runs.append((start, end))
        start = end
    return runs
