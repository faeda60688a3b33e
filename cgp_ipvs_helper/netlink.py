"""The real-mode kernel: netlink for addresses and IPVS, /proc/sys for sysctls, a packet socket
for gratuitous ARP. This is the only module that imports pyroute2.

pyroute2 supplies the netlink and IPVS constants. Messages are packed and parsed here with
`struct`, because pyroute2 0.9.7 is far too slow for a /24. Measured in the user-mode kernel
(medians of several runs; 256 VIPs x 2 protocols x 4 real servers + 512 addresses = 3,072
operations): pyroute2's IPVS.service("add") 2.1-2.8 ms a call, a forked `ipvsadm -A` 26-48 ms,
one operation here alone 0.26-0.35 ms (a netlink round trip), batched 11-13 us (all 3,072 in
34-39 ms). On the host pyroute2 takes 0.36 ms just to encode one IPVS message, here 3-4 us.

`apply_many()` sends consecutive IPVS or address operations as datagrams of up to `_BATCH`
requests, only the last with NLM_F_ACK. The kernel handles every request of a datagram in order
before send() returns; it answers a failed request with an error carrying its sequence number,
a successful one with nothing, and the last one's ack says the datagram is done.

Sockets open on first use and stay open (this runs for weeks inside CommuniGate Pro); one that
fails at the socket level is closed and opened again on the next call. A socket belongs to the
network namespace the process was in when it opened.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import struct
import threading
from collections.abc import Iterable, Sequence
from typing import Callable

from pyroute2.netlink import (
    CTRL_CMD_GETFAMILY,
    GENL_ID_CTRL,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.generic import ipvs as pr_ipvs
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_GETADDR, RTM_NEWADDR

from .errors import KernelError
from .model import Address, Daemon, Dest, KernelState, Service, ServiceKey
from .operations import (
    AddAddress,
    AddDest,
    AddService,
    DelAddress,
    DelDest,
    DelService,
    EditDest,
    EditService,
    Operation,
    SendGarp,
    SetSysctl,
    StartDaemon,
    StopDaemon,
)

NETLINK_ROUTE = 0
NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # an error comes back without a copy of the request
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 1, 2
IFA_ADDRESS, IFA_LOCAL = 1, 2
RT_SCOPE_HOST = 254

# include/uapi/linux/ip_vs.h
IPVS_FAMILY = pr_ipvs.GENL_NAME  # "IPVS": the generic netlink family the ip_vs module registers
IPVS_CMD_ATTR_SERVICE, IPVS_CMD_ATTR_DEST, IPVS_CMD_ATTR_DAEMON = 1, 2, 3
IPVS_SVC_ATTR_AF = 1  # u16
IPVS_SVC_ATTR_PROTOCOL = 2  # u16
IPVS_SVC_ATTR_ADDR = 3  # union nf_inet_addr (4 bytes are enough for AF_INET)
IPVS_SVC_ATTR_PORT = 4  # be16
IPVS_SVC_ATTR_FWMARK = 5  # u32
IPVS_SVC_ATTR_SCHED_NAME = 6  # string
IPVS_SVC_ATTR_FLAGS = 7  # struct ip_vs_flags {u32 flags; u32 mask}
IPVS_SVC_ATTR_TIMEOUT = 8  # u32 seconds
IPVS_SVC_ATTR_NETMASK = 9  # be32
IPVS_DEST_ATTR_ADDR = 1  # union nf_inet_addr
IPVS_DEST_ATTR_PORT = 2  # be16
IPVS_DEST_ATTR_FWD_METHOD = 3  # u32, IP_VS_CONN_F_*
IPVS_DEST_ATTR_WEIGHT = 4  # u32
IPVS_DEST_ATTR_U_THRESH = 5  # u32
IPVS_DEST_ATTR_L_THRESH = 6  # u32
IPVS_DEST_ATTR_ADDR_FAMILY = 11  # u16, Linux 3.18 and later
# The sync daemon's attributes, which pyroute2 0.9.7 does not declare (it has the whole
# IPVS_CMD_ATTR_DAEMON as "hex"). NEW_DAEMON needs the first three, DEL_DAEMON only STATE.
# Linux 4.3 added SYNC_MAXLEN (u16, 1472 by default), MCAST_GROUP (in_addr, 224.0.0.81),
# MCAST_GROUP6 (in6_addr), MCAST_PORT (u16 in host order, 8848) and MCAST_TTL (u8, 1), numbered
# 4 to 8; 6.1 reports all but MCAST_GROUP6 for an IPv4 daemon. This helper keeps the defaults.
IPVS_DAEMON_ATTR_STATE = 1  # u32: 1 master, 2 backup
IPVS_DAEMON_ATTR_MCAST_IFN = 2  # NUL-terminated interface name
IPVS_DAEMON_ATTR_SYNC_ID = 3  # u32
IP_VS_SVC_F_PERSISTENT = 0x1
IP_VS_CONN_F_FWD_MASK = 0x7
IP_VS_CONN_F_DROUTE = 3
IP_VS_STATE = {"master": 1, "backup": 2}
_STATE_NAMES = {v: k for k, v in IP_VS_STATE.items()}

# A local real server (the director itself: this project's "self" member) added with -g is
# reported by Linux 6.1 with fwd_method 3 (DROUTE), and `ipvsadm -Ln` shows "Route" (seen in the
# user-mode kernel); 6.1 finds out per packet that the route is local. Older kernels (2.6.x, such
# as RHEL 6's 2.6.32) rewrote it to 1 (LOCALNODE, "Local") when it was added. Both read as "dr".
_METHODS = {0: "nat", 1: "dr", 2: "tunnel", 3: "dr"}
_PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
_PROTOCOL_NAMES = {v: k for k, v in _PROTOCOLS.items()}

_BATCH = 256  # requests per datagram: even if all fail, their errors fit the receive buffer
_RCVBUF = 1 << 20
_TIMEOUT = struct.pack("@ll", 5, 0)  # SO_RCVTIMEO: the kernel answers at once; never hang
_NLMSGHDR = struct.Struct("=IHHII")
_GENLHDR = 20  # nlmsghdr + genlmsghdr
_IFADDRMSG = struct.Struct("=BBBBI")
_NLA = struct.Struct("=HH")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_BE16 = struct.Struct("!H")

ETH_P_ARP = 0x0806
ARPHRD_ETHER = 1
_BROADCAST = b"\xff" * 6
_ARP = struct.Struct("!6s6sHHHBBH6s4s6s4s")
_FRAME_LEN = 60  # minimum Ethernet frame without FCS; some drivers do not pad short frames


class _KernelSaid(OSError):
    """The kernel answered a request with an error (the socket itself is fine)."""


class _Unavailable(Exception):
    """IPVS cannot be used; the text says why, for the log."""


# --- packing requests ------------------------------------------------------------------------


def _nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return _NLA.pack(size, kind) + payload + b"\0" * (-size % 4)


def _ip(ip: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET, ip)
    except (OSError, TypeError):
        raise OSError(errno.EINVAL, f"not an IPv4 address: {ip!r}") from None


def _genl(cmd: int, *attrs: bytes) -> bytes:
    return struct.pack("=BBH", cmd, pr_ipvs.GENL_VERSION, 0) + b"".join(attrs)


@functools.lru_cache(maxsize=4096)  # a dest names its service: 4 real servers share one key
def _service_key(key: ServiceKey) -> bytes:
    return (
        _nla(IPVS_SVC_ATTR_AF, _U16.pack(socket.AF_INET))
        + _nla(IPVS_SVC_ATTR_PROTOCOL, _U16.pack(_PROTOCOLS[key.proto]))
        + _nla(IPVS_SVC_ATTR_ADDR, _ip(key.vip))
        + _nla(IPVS_SVC_ATTR_PORT, _BE16.pack(key.port))
    )


def _service(svc: Service) -> bytes:
    # what ipvsadm sends: the whole flag word (mask ~0), the timeout in seconds, netmask /32
    flags = IP_VS_SVC_F_PERSISTENT if svc.persistence else 0
    return _nla(
        IPVS_CMD_ATTR_SERVICE,
        _service_key(svc.key)
        + _nla(IPVS_SVC_ATTR_SCHED_NAME, svc.scheduler.encode() + b"\0")
        + _nla(IPVS_SVC_ATTR_FLAGS, struct.pack("=II", flags, 0xFFFFFFFF))
        + _nla(IPVS_SVC_ATTR_TIMEOUT, _U32.pack(svc.persistence))
        + _nla(IPVS_SVC_ATTR_NETMASK, b"\xff\xff\xff\xff"),
    )


def _dest(dest: Dest, full: bool) -> bytes:
    attrs = _nla(IPVS_DEST_ATTR_ADDR, _ip(dest.ip)) + _nla(
        IPVS_DEST_ATTR_PORT, _BE16.pack(dest.port)
    )
    if full:
        attrs += (
            _nla(IPVS_DEST_ATTR_FWD_METHOD, _U32.pack(IP_VS_CONN_F_DROUTE))
            + _nla(IPVS_DEST_ATTR_WEIGHT, _U32.pack(dest.weight))
            + _nla(IPVS_DEST_ATTR_U_THRESH, _U32.pack(0))
            + _nla(IPVS_DEST_ATTR_L_THRESH, _U32.pack(0))
        )
    return _nla(IPVS_CMD_ATTR_SERVICE, _service_key(dest.service)) + _nla(IPVS_CMD_ATTR_DEST, attrs)


def _daemon(daemon: Daemon, full: bool) -> bytes:
    attrs = _nla(IPVS_DAEMON_ATTR_STATE, _U32.pack(IP_VS_STATE[daemon.state]))
    if full:
        attrs += _nla(IPVS_DAEMON_ATTR_MCAST_IFN, daemon.iface.encode() + b"\0") + _nla(
            IPVS_DAEMON_ATTR_SYNC_ID, _U32.pack(daemon.syncid)
        )
    return _nla(IPVS_CMD_ATTR_DAEMON, attrs)


# operation class -> (IPVS command, attributes); the kernel runs one master and one backup
# daemon per network namespace and stops a daemon by its state alone
_IPVS_REQUESTS: dict[type, Callable[..., tuple[int, bytes]]] = {
    AddService: lambda op: (pr_ipvs.IPVS_CMD_NEW_SERVICE, _service(op.service)),
    EditService: lambda op: (pr_ipvs.IPVS_CMD_SET_SERVICE, _service(op.service)),
    DelService: lambda op: (
        pr_ipvs.IPVS_CMD_DEL_SERVICE,
        _nla(IPVS_CMD_ATTR_SERVICE, _service_key(op.service.key)),
    ),
    AddDest: lambda op: (pr_ipvs.IPVS_CMD_NEW_DEST, _dest(op.dest, True)),
    EditDest: lambda op: (pr_ipvs.IPVS_CMD_SET_DEST, _dest(op.dest, True)),
    DelDest: lambda op: (pr_ipvs.IPVS_CMD_DEL_DEST, _dest(op.dest, False)),
    StartDaemon: lambda op: (pr_ipvs.IPVS_CMD_NEW_DAEMON, _daemon(op.daemon, True)),
    StopDaemon: lambda op: (pr_ipvs.IPVS_CMD_DEL_DAEMON, _daemon(op.daemon, False)),
}


def _ifaddr(ip: str, prefixlen: int, index: int) -> bytes:
    # what `ip address add|del A/P dev D` sends; scope host only for 127/8, as iproute2 does
    packed = _ip(ip)
    scope = RT_SCOPE_HOST if packed[0] == 127 else 0
    return (
        _IFADDRMSG.pack(socket.AF_INET, prefixlen, 0, scope, index)
        + _nla(IFA_LOCAL, packed)
        + _nla(IFA_ADDRESS, packed)
    )


# --- parsing answers -------------------------------------------------------------------------


def _attrs(data: bytes, offset: int) -> dict[int, bytes]:
    """The attributes from `offset` to the end, by type (the nested/byte-order bits dropped)."""
    out: dict[int, bytes] = {}
    end = len(data)
    while offset + 4 <= end:
        size, kind = _NLA.unpack_from(data, offset)
        if size < 4:
            break
        out[kind & 0x3FFF] = data[offset + 4 : offset + size]
        offset += (size + 3) & ~3
    return out


def _string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _service_from(msg: bytes) -> Service | None:
    """A Service, or None for what is never ours: IPv6, fwmark, SCTP, unknown scheduler."""
    a = _attrs(_attrs(msg, _GENLHDR).get(IPVS_CMD_ATTR_SERVICE, b""), 0)
    if IPVS_SVC_ATTR_FWMARK in a or _U16.unpack(a[IPVS_SVC_ATTR_AF])[0] != socket.AF_INET:
        return None
    proto = _PROTOCOL_NAMES.get(_U16.unpack(a[IPVS_SVC_ATTR_PROTOCOL])[0])
    if proto is None:
        return None
    flags = struct.unpack_from("=I", a[IPVS_SVC_ATTR_FLAGS])[0]
    timeout = _U32.unpack(a[IPVS_SVC_ATTR_TIMEOUT])[0]
    try:
        return Service(
            ServiceKey(
                proto,
                socket.inet_ntoa(a[IPVS_SVC_ATTR_ADDR][:4]),
                _BE16.unpack(a[IPVS_SVC_ATTR_PORT])[0],
            ),
            _string(a[IPVS_SVC_ATTR_SCHED_NAME]),
            timeout if flags & IP_VS_SVC_F_PERSISTENT else 0,
        )
    except ValueError:
        return None  # a scheduler the model does not know: not one of ours


def _dest_from(key: ServiceKey, msg: bytes) -> Dest | None:
    a = _attrs(_attrs(msg, _GENLHDR).get(IPVS_CMD_ATTR_DEST, b""), 0)
    family = a.get(IPVS_DEST_ATTR_ADDR_FAMILY)
    if family is not None and _U16.unpack(family)[0] != socket.AF_INET:
        return None  # an IPv6 real server of an IPv4 service (tunnel mode): never ours
    fwd = _U32.unpack(a[IPVS_DEST_ATTR_FWD_METHOD])[0] & IP_VS_CONN_F_FWD_MASK
    return Dest(
        key,
        socket.inet_ntoa(a[IPVS_DEST_ATTR_ADDR][:4]),
        _U32.unpack(a[IPVS_DEST_ATTR_WEIGHT])[0],
        _METHODS.get(fwd, f"fwd{fwd}"),
    )


def _daemon_from(msg: bytes) -> Daemon | None:
    a = _attrs(_attrs(msg, _GENLHDR).get(IPVS_CMD_ATTR_DAEMON, b""), 0)
    state = _STATE_NAMES.get(_U32.unpack(a[IPVS_DAEMON_ATTR_STATE])[0])
    if state is None:
        return None
    return Daemon(
        state, _string(a[IPVS_DAEMON_ATTR_MCAST_IFN]), _U32.unpack(a[IPVS_DAEMON_ATTR_SYNC_ID])[0]
    )


# --- one netlink socket ----------------------------------------------------------------------


class _Netlink:
    """One netlink socket: dumps, single requests, and batches acked once.

    A kernel's error answer raises _KernelSaid; any other OSError means the socket failed,
    and `broken` tells the owner to open a new one.
    """

    def __init__(self, proto: int) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto)
        try:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, _RCVBUF)
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            try:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            except OSError:
                pass  # before Linux 4.3 errors carry the request; the buffer still suffices
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEOUT)
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise
        self.seq = 0
        self.broken = False
        self.buf = bytearray(1 << 16)  # a datagram of a dump is at most 32 KiB

    def close(self) -> None:
        self.sock.close()

    def _seqs(self, n: int) -> int:
        """Reserve n sequence numbers; the first."""
        if self.seq > 0x7FFFFFFF - n:
            self.seq = 0
        first = self.seq + 1
        self.seq += n
        return first

    def _send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except OSError:
            self.broken = True
            raise

    def _recv(self) -> list[tuple[int, int, int, bytes]]:
        """One datagram as (type, flags, seq, whole message) tuples."""
        try:
            n = self.sock.recv_into(self.buf)
        except OSError:
            self.broken = True  # ENOBUFS lost answers, EAGAIN timed out: start afresh
            raise
        data = bytes(self.buf[:n])
        out = []
        offset = 0
        while offset + 16 <= n:
            length, mtype, flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
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
        for _attempt in range(5):
            seq = self._seqs(1)
            self._send(
                _NLMSGHDR.pack(16 + len(body), mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body
            )
            out: list[bytes] = []
            interrupted = done = False
            while not done:
                for rtype, flags, rseq, msg in self._recv():
                    if rseq != seq:
                        continue  # a late answer to an earlier request
                    interrupted |= bool(flags & NLM_F_DUMP_INTR)
                    if rtype in (NLMSG_DONE, NLMSG_ERROR):
                        err = self._error(msg)
                        if err:
                            raise _KernelSaid(err, os.strerror(err))
                        done = True
                    else:
                        out.append(msg)
            if not interrupted:
                break
        return out

    def request(self, mtype: int, body: bytes) -> list[bytes]:
        """One acked request: its answers before the ack."""
        seq = self._seqs(1)
        self._send(_NLMSGHDR.pack(16 + len(body), mtype, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body)
        out: list[bytes] = []
        while True:
            for rtype, _flags, rseq, msg in self._recv():
                if rseq != seq:
                    continue
                if rtype == NLMSG_ERROR:
                    err = self._error(msg)
                    if err:
                        raise _KernelSaid(err, os.strerror(err))
                    return out
                out.append(msg)

    def batch(self, requests: Sequence[tuple[int, int, bytes]]) -> dict[int, int]:
        """Send (type, flags, body) requests in order; {index: errno} of those that failed.

        If the socket fails, every request whose outcome is unknown is reported with that
        error (the next refresh reads the kernel again) and `broken` is set.
        """
        failed: dict[int, int] = {}
        for start in range(0, len(requests), _BATCH):
            chunk = requests[start : start + _BATCH]
            first = self._seqs(len(chunk))
            last = first + len(chunk) - 1
            data = b"".join(
                _NLMSGHDR.pack(
                    16 + len(body),
                    mtype,
                    flags | NLM_F_REQUEST | (NLM_F_ACK if seq == last else 0),
                    seq,
                    0,
                )
                + body
                for seq, (mtype, flags, body) in enumerate(chunk, first)
            )
            try:
                self._send(data)
                acked = False
                while not acked:
                    for rtype, _flags, rseq, msg in self._recv():
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


# --- the kernel ------------------------------------------------------------------------------


class NetlinkKernel:
    """The `Kernel` of real mode. Thread-safe; opens its sockets on first use.

    `ipvs_problem` is None while IPVS can be read, else why not (set by observe(), for one log
    line); observe() then reports ipvs=False with no services, real servers or daemons.
    """

    def __init__(self) -> None:
        self.ipvs_problem: str | None = None
        self._rtnl: _Netlink | None = None
        self._genl: _Netlink | None = None
        self._ipvs_family: int | None = None
        self._ifindex: dict[str, int] = {}
        self._garp: dict[str, socket.socket] = {}
        self._macs: dict[str, bytes] = {}
        self._lock = threading.RLock()

    # --- the Kernel protocol -------------------------------------------------------------------

    def observe(self, sysctls: frozenset[str]) -> KernelState:
        """Addresses, the asked-for sysctls and IPVS; KernelError if addresses cannot be read."""
        with self._lock:
            try:
                addresses = self._addresses()
            except (OSError, ValueError, KeyError, struct.error) as exc:
                raise KernelError("reading addresses", _reason(exc)) from None
            finally:
                self._reap()
            values = {path: _read_sysctl(path) for path in sorted(sysctls)}
            try:
                services, dests, daemons = self._ipvs_state()
                self.ipvs_problem = None
            except _Unavailable as exc:
                self.ipvs_problem = str(exc)
                services, dests, daemons = frozenset(), frozenset(), frozenset()
            finally:
                self._reap()
            return KernelState(
                addresses=addresses,
                sysctls=values,
                services=services,
                dests=dests,
                daemons=daemons,
                ipvs=self.ipvs_problem is None,
            )

    def apply(self, op: Operation) -> None:
        """Carry out one operation; KernelError with the kernel's reason if it fails."""
        errors = self.apply_many((op,))
        if errors:
            raise errors[0]

    def apply_many(self, ops: Iterable[Operation]) -> list[KernelError]:
        """Carry out every operation in order, going on after a failure; the failures, in order.

        Consecutive netlink operations travel in batches; that changes no order of effects.
        """
        errors: list[KernelError] = []
        pending: list[tuple[Operation, tuple[int, int, bytes]]] = []
        channel: str | None = None
        with self._lock:
            self._macs.clear()
            for op in ops:
                wanted = _CHANNELS.get(type(op))
                if wanted != channel:
                    errors += self._flush(channel, pending)
                    pending, channel = [], wanted
                try:
                    if wanted is None:
                        self._direct(op)
                    else:
                        pending.append((op, self._encode(op)))
                except KernelError as exc:
                    errors += self._flush(channel, pending)
                    pending = []
                    errors.append(exc)
            errors += self._flush(channel, pending)
        return errors

    def close(self) -> None:
        with self._lock:
            for nl in (self._rtnl, self._genl):
                if nl is not None:
                    nl.close()
            for sock in self._garp.values():
                sock.close()
            self._rtnl = self._genl = self._ipvs_family = None
            self._garp.clear()
            self._ifindex.clear()

    # --- sockets --------------------------------------------------------------------------------

    def _route(self) -> _Netlink:
        if self._rtnl is None:
            self._rtnl = _Netlink(NETLINK_ROUTE)
        return self._rtnl

    def _generic(self) -> _Netlink:
        if self._genl is None:
            self._genl = _Netlink(NETLINK_GENERIC)
        return self._genl

    def _reap(self) -> None:
        """Close a socket that failed; the next call opens a new one."""
        if self._rtnl is not None and self._rtnl.broken:
            self._rtnl.close()
            self._rtnl = None
        if self._genl is not None and self._genl.broken:
            self._genl.close()
            self._genl = self._ipvs_family = None

    def _ipvs(self) -> int:
        """The IPVS generic-netlink family id; _Unavailable if the module is not loaded."""
        if self._ipvs_family is None:
            body = struct.pack("=BBH", CTRL_CMD_GETFAMILY, 1, 0) + _nla(
                CTRL_ATTR_FAMILY_NAME, IPVS_FAMILY.encode() + b"\0"
            )
            try:
                reply = self._generic().request(GENL_ID_CTRL, body)[0]
                family = _U16.unpack(_attrs(reply, _GENLHDR)[CTRL_ATTR_FAMILY_ID])[0]
            except _KernelSaid as exc:
                if exc.errno == errno.ENOENT:
                    raise _Unavailable(
                        "IPVS is not available: load the ip_vs kernel module "
                        "(no generic netlink family IPVS)"
                    ) from None
                raise _Unavailable(f"IPVS is not available: {_reason(exc)}") from None
            except (OSError, IndexError, KeyError, struct.error) as exc:
                raise _Unavailable(f"IPVS is not available: {_reason(exc)}") from None
            self._ipvs_family = family
        return self._ipvs_family

    # --- observing ------------------------------------------------------------------------------

    def _addresses(self) -> tuple[Address, ...]:
        names = dict(socket.if_nameindex())
        self._ifindex = {name: index for index, name in names.items()}
        out = []
        for msg in self._route().dump(RTM_GETADDR, _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)):
            family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(msg, 16)
            a = _attrs(msg, 16 + _IFADDRMSG.size)
            ip = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
            name = names.get(index)
            if family == socket.AF_INET and ip and name:
                out.append(Address(socket.inet_ntoa(ip[:4]), name, prefixlen))
        return tuple(out)

    def _ipvs_state(self) -> tuple[frozenset[Service], frozenset[Dest], frozenset[Daemon]]:
        family = self._ipvs()
        genl = self._generic()
        try:
            services = []
            for msg in genl.dump(family, _genl(pr_ipvs.IPVS_CMD_GET_SERVICE)):
                svc = _service_from(msg)
                if svc is not None:
                    services.append(svc)
            dests = []
            for svc in services:
                key = _nla(IPVS_CMD_ATTR_SERVICE, _service_key(svc.key))
                for msg in genl.dump(family, _genl(pr_ipvs.IPVS_CMD_GET_DEST, key)):
                    dest = _dest_from(svc.key, msg)
                    if dest is not None:
                        dests.append(dest)
            daemons = []
            for msg in genl.dump(family, _genl(pr_ipvs.IPVS_CMD_GET_DAEMON)):
                daemon = _daemon_from(msg)
                if daemon is not None:
                    daemons.append(daemon)
        except _KernelSaid as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise _Unavailable(
                    "IPVS is not available: permission denied (needs root or CAP_NET_ADMIN)"
                ) from None
            if exc.errno in (errno.ENOENT, errno.EOPNOTSUPP):
                self._ipvs_family = None  # the module went away, or came back with a new id
            raise _Unavailable(f"IPVS could not be read: {_reason(exc)}") from None
        except OSError as exc:
            raise _Unavailable(f"IPVS could not be read: {_reason(exc)}") from None
        except (KeyError, ValueError, struct.error) as exc:
            raise _Unavailable(f"IPVS could not be read: unexpected answer ({exc!r})") from None
        return frozenset(services), frozenset(dests), frozenset(daemons)

    # --- applying -------------------------------------------------------------------------------

    def _encode(self, op: Operation) -> tuple[int, int, bytes]:
        """(message type, flags, body) of a netlink operation."""
        try:
            if isinstance(op, (AddAddress, DelAddress)):
                a = op.address
                body = _ifaddr(a.ip, a.prefixlen, self._index(a.dev))
                if isinstance(op, AddAddress):
                    return RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body
                return RTM_DELADDR, 0, body
            cmd, attrs = _IPVS_REQUESTS[type(op)](op)
            return self._ipvs(), 0, _genl(cmd, attrs)
        except _Unavailable as exc:
            self._reap()
            raise KernelError(op, str(exc)) from None
        except Exception as exc:  # a malformed operation fails alone; the helper never crashes
            raise KernelError(op, _reason(exc)) from None

    def _flush(
        self, channel: str | None, pending: list[tuple[Operation, tuple[int, int, bytes]]]
    ) -> list[KernelError]:
        if not pending:
            return []
        try:
            nl = self._route() if channel == "rtnl" else self._generic()
        except OSError as exc:
            return [KernelError(op, _reason(exc)) for op, _ in pending]
        failed = nl.batch([request for _, request in pending])
        self._reap()
        codes = set(failed.values())
        if channel == "genl" and codes & {errno.ENOENT, errno.EOPNOTSUPP}:
            self._ipvs_family = None  # perhaps the module was reloaded: ask again next time
        if channel == "rtnl" and errno.ENODEV in codes:
            self._ifindex.clear()  # perhaps a device was replaced: resolve names again
        return [KernelError(pending[i][0], os.strerror(code)) for i, code in sorted(failed.items())]

    def _index(self, dev: str) -> int:
        index = self._ifindex.get(dev)
        if index is None:
            try:
                index = socket.if_nametoindex(dev)
            except OSError:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV)) from None
            self._ifindex[dev] = index
        return index

    def _direct(self, op: Operation) -> None:
        try:
            if isinstance(op, SetSysctl):
                _write_sysctl(op.sysctl.path, op.sysctl.value)
            elif isinstance(op, SendGarp):
                self._send_garp(op)
            else:
                raise OSError(errno.EOPNOTSUPP, f"unsupported operation {type(op).__name__}")
        except Exception as exc:  # as in _encode
            raise KernelError(op, _reason(exc)) from None

    def _send_garp(self, op: SendGarp) -> None:
        ip = _ip(op.ip)
        for attempt in (0, 1):
            sock = self._garp.get(op.dev)
            try:
                if sock is None:
                    sock = self._garp[op.dev] = _packet_socket(op.dev)
                mac = self._macs.get(op.dev)
                if mac is None:  # the device's MAC now, read once per apply_many() call
                    _name, _proto, _pkttype, hatype, mac = sock.getsockname()
                    if hatype != ARPHRD_ETHER or len(mac) != 6:
                        raise OSError(errno.EINVAL, f"{op.dev} is not an Ethernet device")
                    self._macs[op.dev] = mac
                # request: target MAC zero, as in Linux's own announcements; reply: our own MAC,
                # as iputils `arping -A` sends it: Linux takes a reply as gratuitous (and past
                # its 1 s ARP lock time) only when target MAC equals sender MAC (arp_is_garp)
                tha = mac if op.reply else b"\0" * 6
                frame = _ARP.pack(
                    _BROADCAST, mac, ETH_P_ARP,
                    ARPHRD_ETHER, 0x0800, 6, 4, 2 if op.reply else 1, mac, ip, tha, ip,
                )  # fmt: skip
                sock.sendto(frame.ljust(_FRAME_LEN, b"\0"), (op.dev, ETH_P_ARP))
                return
            except OSError as exc:
                # the device may have been replaced since the socket opened: open anew once
                if sock is not None:
                    sock.close()
                self._garp.pop(op.dev, None)
                self._macs.pop(op.dev, None)
                if attempt or exc.errno not in (errno.ENODEV, errno.ENXIO):
                    raise


_CHANNELS: dict[type, str] = {AddAddress: "rtnl", DelAddress: "rtnl"}
_CHANNELS.update(dict.fromkeys(_IPVS_REQUESTS, "genl"))


# --- sysctls and frames ----------------------------------------------------------------------


def _sysctl_file(path: str) -> str:
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"bad sysctl path: {path!r}")
    return "/proc/sys/" + path


def _read_sysctl(path: str) -> str | None:
    """The value without its newline; None where the kernel has no such setting (or denies it)."""
    try:
        with open(_sysctl_file(path)) as f:
            return f.read().rstrip("\n")
    except (OSError, ValueError):
        return None


def _write_sysctl(path: str, value: str) -> None:
    fd = os.open(_sysctl_file(path), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode() + b"\n")
    finally:
        os.close(fd)


def _packet_socket(dev: str) -> socket.socket:
    """A packet socket on `dev` that only sends: bound with protocol 0, it receives nothing."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.bind((dev, 0))
    except OSError:
        sock.close()
        raise
    return sock


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        if exc.strerror:
            return exc.strerror
        if exc.errno:
            return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
