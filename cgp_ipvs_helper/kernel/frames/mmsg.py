"""Many datagrams in one system call: Linux's sendmmsg(2), reached through libc with ctypes.

Python's socket module has sendmsg() (one datagram a call) but no sendmmsg. A gratuitous ARP
round is 2 frames per VIP, 512 for a /24: at one send() each that is 512 system calls where
one sendmmsg does.
ctypes is in the standard library and libc (glibc 2.14+, musl) exports sendmmsg; where it does
not, or the C structures do not have the layout packed here, `available()` is False and the
caller sends one datagram a call instead.

A `Round` is a fixed list of addressed datagrams with its C arrays built once, so a round sent
again (the repeats, each refresh) costs the system call alone.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from collections.abc import Sequence


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


# The same layouts for struct.pack_into (native alignment, as C lays them out); checked below
# against ctypes' own offsets, so a platform where they differ just goes without sendmmsg.
_IOVEC = struct.Struct("@PN")
_MSGHDR_HEAD = "@PIPNPNi"
_MMSGHDR = struct.Struct(
    _MSGHDR_HEAD
    + "x" * (ctypes.sizeof(_Msghdr) - struct.calcsize(_MSGHDR_HEAD))
    + "I"
    + "x" * (ctypes.sizeof(_Mmsghdr) - ctypes.sizeof(_Msghdr) - 4)
)
MAX_VLEN = 1024  # UIO_MAXIOV: the kernel sends at most this many per call


def _layout_matches() -> bool:
    probe = bytearray(_MMSGHDR.size)
    _MMSGHDR.pack_into(probe, 0, 1, 2, 3, 4, 5, 6, 7, 8)
    m = _Mmsghdr.from_buffer(probe)
    h = m.msg_hdr
    fields = (h.msg_name, h.msg_namelen, h.msg_iov, h.msg_iovlen)
    rest = (h.msg_control, h.msg_controllen, h.msg_flags, m.msg_len)
    return (
        _MMSGHDR.size == ctypes.sizeof(_Mmsghdr)
        and _IOVEC.size == ctypes.sizeof(_Iovec)
        and fields + rest == (1, 2, 3, 4, 5, 6, 7, 8)
    )


def _libc_sendmmsg() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sendmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn if _layout_matches() else None


_sendmmsg = _libc_sendmmsg()


def available() -> bool:
    return _sendmmsg is not None


class Round:
    """Datagrams, each with its address, laid out for sendmmsg once; `send()` them as often as
    needed."""

    def __init__(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self.items = list(items)  # (address, datagram)
        n = len(self.items)
        self._data = ctypes.create_string_buffer(b"".join(d for _a, d in self.items) or b"\0")
        self._names = {a: ctypes.create_string_buffer(a) for a in {a for a, _d in self.items}}
        self._iov = bytearray(_IOVEC.size * n)
        self._msgs = bytearray(_MMSGHDR.size * n)
        self._iov_c = (ctypes.c_char * len(self._iov)).from_buffer(self._iov) if n else None
        self._msgs_c = (ctypes.c_char * len(self._msgs)).from_buffer(self._msgs) if n else None
        base = ctypes.addressof(self._data)
        names = {a: ctypes.addressof(buf) for a, buf in self._names.items()}
        iov_base = ctypes.addressof(self._iov_c) if n else 0
        offset = 0
        for i, (address, datagram) in enumerate(self.items):
            _IOVEC.pack_into(self._iov, i * _IOVEC.size, base + offset, len(datagram))
            _MMSGHDR.pack_into(
                self._msgs, i * _MMSGHDR.size,
                names[address], len(address), iov_base + i * _IOVEC.size, 1, 0, 0, 0, 0,
            )  # fmt: skip
            offset += len(datagram)

    def warm(self, fd: int) -> None:
        """Call sendmmsg for no datagram: the first call through ctypes touches code that
        nothing ran before (page faults), which the round that announces an ACTIVATE should not
        pay."""
        if _sendmmsg is not None and self._msgs_c is not None:
            _sendmmsg(fd, ctypes.addressof(self._msgs_c), 0, 0)

    def send(self, fd: int, start: int = 0) -> int:
        """Send from datagram `start` on; how many left in one call (at least 1), or OSError
        for datagram `start` (the kernel reports an error only when it sent none)."""
        n = min(len(self.items) - start, MAX_VLEN)
        if n <= 0:
            return 0
        assert _sendmmsg is not None and self._msgs_c is not None
        sent = _sendmmsg(fd, ctypes.addressof(self._msgs_c) + start * _MMSGHDR.size, n, 0)
        if sent < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return int(sent)
