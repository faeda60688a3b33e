"""One netlink socket of any netlink protocol: dumps, single requests, and batches acked once.

The socket opens on first use and stays open (the helper runs for weeks inside CommuniGate Pro).
When it fails at the socket level (send or receive raises: ENOBUFS lost answers, EAGAIN timed
out), it closes itself, so the next call opens a new one; a kernel's error answer to a request
leaves it open. A socket belongs to the network namespace the process was in when it opened.

`batch()` sends requests as datagrams of up to `per_datagram`, only the last with NLM_F_ACK. The
kernel handles every request of a datagram in order before send() returns; it answers a failed
request with an error carrying its sequence number, a successful one with nothing, and the last
one's ack says the datagram is done. Measured in the user-mode kernel (256 VIPs x 2 protocols x
4 real servers + 512 addresses = 3,072 operations): one operation alone 0.26-0.35 ms (a netlink
round trip), batched 11-13 us (all 3,072 in 34-39 ms).
"""

from __future__ import annotations

import errno
import operator
import os
import socket
import struct
from collections.abc import Sequence
from itertools import chain, repeat

from pyroute2.netlink import (
    GENL_ID_CTRL,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)

from cgp_ipvs_helper.kernel.netlink.wire import NLMSGHDR, family_id, family_request

NETLINK_ROUTE = 0
NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # an error comes back without a copy of the request
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)

# Requests per datagram at most: a /24 x 4 ACTIVATE sends 3 datagrams instead of 12 of 256
# (each a send and a receive). The errors of all of a datagram's requests must fit the receive
# buffer, or some are lost: the kernel doubles the size set (2 MiB with CAP_NET_ADMIN, about
# 416 KiB by default without), and an error takes under ERROR_ROOM of it, its request included
# before Linux 4.3. A socket sends as many as its buffer holds the errors of (`per_datagram`).
BATCH = 1024
ERROR_ROOM = 2048
_BUFFER = 1 << 20
_TIMEOUT = struct.pack("@ll", 5, 0)  # SO_RCVTIMEO: the kernel answers at once; never hang

Request = tuple[int, int, bytes]  # message type, flags (NLM_F_REQUEST and NLM_F_ACK added), body


class KernelSaid(OSError):
    """The kernel answered a request with an error (the socket itself is fine)."""


class NetlinkSocket:
    """A netlink socket of protocol `proto`, opened on first use and again after a failure."""

    def __init__(self, proto: int) -> None:
        self.proto = proto
        self._sock: socket.socket | None = None
        self._seq = 0
        self._buf = bytearray(1 << 16)  # a datagram of a dump is at most 32 KiB
        self.per_datagram = BATCH  # requests sent together, once open

    def close(self) -> None:
        """Close the socket (if open); the next call opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _open(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, self.proto)
        try:
            for forced, size in (
                (SO_RCVBUFFORCE, socket.SO_RCVBUF),
                (SO_SNDBUFFORCE, socket.SO_SNDBUF),
            ):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, forced, _BUFFER)
                except OSError:  # without CAP_NET_ADMIN: as far as the system allows
                    sock.setsockopt(socket.SOL_SOCKET, size, _BUFFER)
            try:
                sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            except OSError:
                pass  # before Linux 4.3 errors carry the request; the buffer still suffices
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEOUT)
            sock.bind((0, 0))
        except BaseException:
            sock.close()
            raise
        room = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // ERROR_ROOM
        self._sock, self._seq, self.per_datagram = sock, 0, max(1, min(BATCH, room))
        return sock

    def _seqs(self, n: int) -> int:
        """Reserve n sequence numbers; the first."""
        if self._seq > 0x7FFFFFFF - n:
            self._seq = 0
        first = self._seq + 1
        self._seq += n
        return first

    def _send(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.send(data)
        except OSError:
            self.close()
            raise

    def _recv(self, sock: socket.socket) -> list[tuple[int, int, int, bytes]]:
        """One datagram as (type, flags, seq, whole message) tuples."""
        try:
            n = sock.recv_into(self._buf)
        except OSError:
            self.close()  # ENOBUFS lost answers, EAGAIN timed out: start afresh
            raise
        data = bytes(self._buf[:n])
        out = []
        offset = 0
        while offset + 16 <= n:
            length, mtype, flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
            if length < 16:
                break
            out.append((mtype, flags, seq, data[offset : offset + length]))
            offset += (length + 3) & ~3
        return out

    @staticmethod
    def _error(msg: bytes) -> int:
        return -struct.unpack_from("=i", msg, 16)[0] if len(msg) >= 20 else 0

    def dump(self, mtype: int, body: bytes) -> list[bytes]:
        """Every message of a dump; repeated while the kernel flags it as interrupted."""
        sock = self._open()
        for _attempt in range(5):
            seq = self._seqs(1)
            head = NLMSGHDR.pack(16 + len(body), mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
            self._send(sock, head + body)
            out: list[bytes] = []
            interrupted = done = False
            while not done:
                for rtype, flags, rseq, msg in self._recv(sock):
                    if rseq != seq:
                        continue  # a late answer to an earlier request
                    interrupted |= bool(flags & NLM_F_DUMP_INTR)
                    if rtype in (NLMSG_DONE, NLMSG_ERROR):
                        err = self._error(msg)
                        if err:
                            raise KernelSaid(err, os.strerror(err))
                        done = True
                    else:
                        out.append(msg)
            if not interrupted:
                break
        return out

    def request(self, mtype: int, body: bytes) -> list[bytes]:
        """One acked request: its answers before the ack."""
        sock = self._open()
        seq = self._seqs(1)
        head = NLMSGHDR.pack(16 + len(body), mtype, NLM_F_REQUEST | NLM_F_ACK, seq, 0)
        self._send(sock, head + body)
        out: list[bytes] = []
        while True:
            for rtype, _flags, rseq, msg in self._recv(sock):
                if rseq != seq:
                    continue
                if rtype == NLMSG_ERROR:
                    err = self._error(msg)
                    if err:
                        raise KernelSaid(err, os.strerror(err))
                    return out
                out.append(msg)

    def batch(self, requests: Sequence[Request]) -> dict[int, int]:
        """Send requests in order; {index: errno} of those that failed.

        OSError only if the socket cannot be opened (nothing was sent). If it fails later, every
        request whose outcome is unknown is reported with that error (the next refresh reads
        the kernel again).
        """
        sock = self._open()
        failed: dict[int, int] = {}
        for start in range(0, len(requests), self.per_datagram):
            chunk = requests[start : start + self.per_datagram]
            first = self._seqs(len(chunk))
            last = first + len(chunk) - 1
            data = datagram(chunk, first)
            try:
                self._send(sock, data)
                acked = False
                while not acked:
                    for rtype, _flags, rseq, msg in self._recv(sock):
                        if rtype == NLMSG_ERROR and first <= rseq <= last:
                            err = self._error(msg)
                            if err:
                                failed[start + rseq - first] = err
                            acked = rseq == last
            except OSError as exc:
                for i in range(start, len(requests)):
                    failed.setdefault(i, exc.errno or errno.EIO)
                break
        return failed


def datagram(requests: Sequence[Request], first: int) -> bytes:
    """The requests as messages numbered from `first`, the last asking for the ack; packed by
    map() and joined, so no Python code runs per message (thousands per ACTIVATE)."""
    types, flags, bodies = zip(*requests)
    flags = [*map(operator.or_, flags[:-1], repeat(NLM_F_REQUEST)), flags[-1] | _LAST]
    lengths = map(operator.add, map(len, bodies), repeat(NLMSGHDR.size))
    seqs = range(first, first + len(requests))
    heads = map(NLMSGHDR.pack, lengths, types, flags, seqs, repeat(0))
    return b"".join(chain.from_iterable(zip(heads, bodies)))


_LAST = NLM_F_REQUEST | NLM_F_ACK


class GenericNetlinkSocket(NetlinkSocket):
    """A NETLINK_GENERIC socket that also knows the ids of the families it has looked up.

    An id is kept while the socket stays open; `forget()` drops one the kernel no longer
    knows (its module was unloaded, or reloaded with a new id).
    """

    def __init__(self) -> None:
        super().__init__(NETLINK_GENERIC)
        self._families: dict[str, int] = {}

    def close(self) -> None:
        super().close()
        self._families.clear()

    def forget(self, name: str) -> None:
        self._families.pop(name, None)

    def family(self, name: str) -> int:
        """The id of family `name`; KernelSaid(ENOENT) when no module has registered it."""
        found = self._families.get(name)
        if found is None:
            found = self._families[name] = family_id(
                self.request(GENL_ID_CTRL, family_request(name))[0]
            )
        return found
