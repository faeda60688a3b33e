"""Gratuitous ARP frames, sent on a packet socket per device (never a forked `arping`).

A round of frames for one device goes out in one sendmmsg (mmsg.py) addressed by interface
index: no per-frame system call, and no per-frame interface lookup (Python's sendto((name,
proto)) asks the kernel for the index of `name` on every call). Frames are built once per
device MAC and kept, and so is the last round's C layout, so a repeated round costs one call.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Sequence

from . import mmsg
from .nlwire import ipv4

ETH_P_ARP = 0x0806
ARPHRD_ETHER = 1
_BROADCAST = b"\xff" * 6
FRAME = struct.Struct("!6s6sHHHBBH6s4s6s4s")  # an Ethernet ARP frame for IPv4, without padding
_FRAME_LEN = 60  # minimum Ethernet frame without FCS; some drivers do not pad short frames
_REPLACED = (errno.ENODEV, errno.ENXIO)  # the device went away or was replaced: open anew once
_MAX_FRAMES = 8192  # kept frames per device (VIPs x 2); beyond that the cache starts afresh

Request = tuple[str, bytes, bool]  # device, IPv4 address, reply form


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


class _Device:
    """An open packet socket on one device: bound with protocol 0, it receives nothing."""

    def __init__(self, dev: str) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self.sock.bind((dev, 0))
            self.index = socket.if_nametoindex(dev)
        except OSError:
            self.sock.close()
            raise
        self.dev = dev
        self.mac: bytes | None = None  # the device's MAC, read once per round
        self.frames: dict[tuple[bytes, bool], bytes] = {}
        self.last: mmsg.Round | None = None
        # sockaddr_ll: family, protocol (big-endian), ifindex, hatype, pkttype, halen, addr
        self.address = (
            struct.pack("=H", socket.AF_PACKET)
            + struct.pack("!H", ETH_P_ARP)
            + struct.pack("=iHBB8s", self.index, 0, 0, 0, b"")
        )

    def read_mac(self) -> bytes:
        name, _proto, _pkttype, hatype, mac = self.sock.getsockname()
        if not name:  # the index the socket is bound to is gone: the device was replaced
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        if hatype != ARPHRD_ETHER or len(mac) != 6:
            raise OSError(errno.EINVAL, f"{self.dev} is not an Ethernet device")
        if mac != self.mac:
            self.frames.clear()
            self.last = None
        self.mac = mac
        return mac

    def frame(self, ip: bytes, reply: bool) -> bytes:
        found = self.frames.get((ip, reply))
        if found is None:
            assert self.mac is not None
            if len(self.frames) >= _MAX_FRAMES:
                self.frames.clear()
            found = self.frames[(ip, reply)] = frame(self.mac, ip, reply)
        return found

    def round(self, frames: Sequence[bytes]) -> mmsg.Round:
        """The C layout of these frames: the last one again if it is the same round."""
        if self.last is None or self.last.datagrams != tuple(frames):
            self.last = mmsg.Round(frames, self.address)
        return self.last

    def send(self, frames: Sequence[bytes], failed: dict[int, int], first: int) -> int:
        """Send frames in order, each failure into `failed` at `first` + its index. Stops at a
        frame refused because the device was replaced and returns its index (to retry on a new
        socket); len(frames) once every frame has its outcome."""
        fd = self.sock.fileno()
        i = 0
        batch = self.round(frames) if mmsg.available() else None
        while i < len(frames):
            try:
                if batch is not None:
                    i += batch.send(fd, i)
                    continue
                self.sock.sendto(frames[i], (self.dev, ETH_P_ARP))  # no sendmmsg: one a call
            except OSError as exc:
                if exc.errno in _REPLACED:
                    failed[first + i] = exc.errno
                    return i
                failed[first + i] = exc.errno or errno.EIO
            i += 1
        return i


class GarpSender:
    """Sends gratuitous ARP frames; keeps one socket per device open, and its MAC until
    `forget_macs()` (called once per batch of operations, so a changed MAC is seen)."""

    def __init__(self) -> None:
        self._devs: dict[str, _Device] = {}

    def forget_macs(self) -> None:
        for device in self._devs.values():
            device.mac = None

    def close(self) -> None:
        for device in self._devs.values():
            device.sock.close()
        self._devs.clear()

    def request(self, ip: str, dev: str, reply: bool) -> Request:
        """Check that a frame for `ip` can be made on `dev` (socket open, MAC read): OSError as
        the kernel refuses, with a reason of its own for a device that is not Ethernet."""
        packed = ipv4(ip)
        self._device(dev, retry=True)
        return (dev, packed, reply)

    def prepare(self, requests: Sequence[Request]) -> None:
        """Build the frames of these requests and lay each device's run out for sendmmsg, as
        batch() of the same requests will want them."""
        for start, end in _runs(requests):
            device = self._devs.get(requests[start][0])
            if device is not None and device.mac is not None:
                device.round([device.frame(ip, reply) for _dev, ip, reply in requests[start:end]])

    def batch(self, requests: Sequence[Request]) -> dict[int, int]:
        """Send the frames in order, one sendmmsg per run of one device; {index: errno} of the
        frames the kernel refused."""
        failed: dict[int, int] = {}
        for start, end in _runs(requests):
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
                frames = [device.frame(ip, reply) for _dev, ip, reply in requests[start:end]]
                stopped = start + device.send(frames, failed, start)
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
                if device.mac is None:
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
