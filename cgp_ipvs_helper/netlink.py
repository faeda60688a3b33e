"""The real-mode kernel: addresses and IPVS over netlink, sysctls through /proc/sys, gratuitous
ARP and IPv6 neighbour advertisements on packet sockets; every operation type is carried out as
its row of `HANDLERS` says.

Real mode never forks per change. Measured in the user-mode kernel: pyroute2's
IPVS.service("add") 2.1-2.8 ms a call, a forked `ipvsadm -A` 26-48 ms, an operation here batched
11-13 us (nlsocket.py has the figures). Only this module and the ones it is built from (nlwire,
ipvswire, nlsocket) import pyroute2, and for its constants only.

To carry out a new operation type: one row in `HANDLERS`. A row with a channel encodes the
operation into a request of that channel (a netlink message; a gratuitous ARP frame's device
and address); consecutive operations of the same channel travel together in batches (netlink
datagrams of many messages, one sendmmsg of many frames), which changes no order of effects. A
row without one carries the operation out at once. A new netlink protocol is one more channel:
a socket and what its failures mean.

A netlink run is sent one datagram's worth (nlsocket.BATCH requests) at a time as it is
encoded, so the requests of the next datagram reuse the memory of the last: holding the 4,096
real servers of a dual-stack /24 + /120 encoded at once cost a few hundred page faults, each
tens of microseconds in the user-mode kernel.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from itertools import count, islice, repeat
from typing import Any, Callable, Protocol, Union

from attrs import frozen
from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_GETADDR, RTM_NEWADDR

from . import ipvswire, operations, sysctl, tc
from .arp import FrameSender
from .errors import KernelError
from .ipvswire import (
    CMD_DEL_DAEMON,
    CMD_DEL_DEST,
    CMD_DEL_SERVICE,
    CMD_NEW_DAEMON,
    CMD_NEW_DEST,
    CMD_NEW_SERVICE,
    CMD_SET_DEST,
    CMD_SET_SERVICE,
    daemon_attrs,
    key_attrs,
    service_attrs,
)
from .model import Address, Daemon, Dest, KernelState, Service, TcState
from .nlsocket import (
    BATCH,
    NETLINK_ROUTE,
    GenericNetlinkSocket,
    KernelSaid,
    NetlinkSocket,
    Request,
)
from .nlwire import ADDRESS_DUMP, address_from, ifaddr

IPVS_FAMILY = ipvswire.FAMILY  # looked up by this name (a kernel test renames it)


class _Unavailable(Exception):
    """IPVS cannot be used; the text says why, for the log."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        if exc.strerror:
            return exc.strerror
        if exc.errno:
            return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


# --- channels: one socket each, and what it caches ---------------------------------------------


class _Channel(Protocol):
    """Where the requests of one row's channel go: sent together, failures by index."""

    def batch(self, requests: Sequence[Any]) -> dict[int, int]:
        """Send in order; {index: errno} of those that failed; OSError if nothing was sent."""

    def failed(self, codes: set[int]) -> None:
        """Some requests failed with these errors: forget what they make doubtful."""


class _Route:
    """NETLINK_ROUTE: addresses, and device indexes by name."""

    def __init__(self) -> None:
        self.sock = NetlinkSocket(NETLINK_ROUTE)
        self._ifindex: dict[str, int] = {}

    def close(self) -> None:
        self.sock.close()
        self._ifindex.clear()

    def addresses(self) -> tuple[Address, ...]:
        names = dict(socket.if_nameindex())
        self._ifindex = {name: index for index, name in names.items()}
        found = (address_from(msg, names) for msg in self.sock.dump(RTM_GETADDR, ADDRESS_DUMP))
        return tuple(a for a in found if a is not None)

    def batch(self, requests: Sequence[Request]) -> dict[int, int]:
        return self.sock.batch(requests)

    def indexes(self) -> dict[str, int]:
        """The device indexes known now, by name."""
        return dict(self._ifindex)

    def request(self, address: Address, add: bool) -> Request:
        body = ifaddr(address, self._index(address.dev))
        return (RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body) if add else (RTM_DELADDR, 0, body)

    def failed(self, codes: set[int]) -> None:
        if errno.ENODEV in codes:
            self._ifindex.clear()  # perhaps a device was replaced: resolve names again

    def tc_state(self, dev: str) -> TcState:
        """The ingress qdisc of `dev` and our filters on it; nothing if it cannot be read (the
        plan then adds everything, and the kernel's answer says why it cannot be done)."""
        try:
            index = self._index(dev)
            kinds = {tc.ingress_kind(msg, index) for msg in self.sock.dump(*tc.dump_qdiscs())}
            found = (tc.parse_filter(msg) for msg in self.sock.dump(*tc.dump_filters(index)))
            ingress = next((k for k in kinds if k is not None), None)
            return TcState(ingress, frozenset(f for f in found if f is not None))
        except (OSError, ValueError, KeyError, struct.error):
            return TcState()

    def tc_request(self, op: operations.Operation) -> Request:
        if isinstance(op, operations.AddClsact):
            return tc.add_clsact(self._index(op.dev))
        if isinstance(op, operations.AddFilter):
            return tc.add_filter(self._index(op.dev), op.filter)
        return tc.del_filter(self._index(op.dev), op.pref, op.chain, op.handle)

    def _index(self, dev: str) -> int:
        index = self._ifindex.get(dev)
        if index is None:
            try:
                index = socket.if_nametoindex(dev)
            except OSError:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV)) from None
            self._ifindex[dev] = index
        return index


class _Ipvs:
    """IPVS on NETLINK_GENERIC: its family id, looked up once per socket, and its state."""

    def __init__(self) -> None:
        self.sock = GenericNetlinkSocket()

    def close(self) -> None:
        self.sock.close()

    def family(self) -> int:
        """The IPVS family id; _Unavailable if the module is not loaded."""
        try:
            return self.sock.family(IPVS_FAMILY)
        except KernelSaid as exc:
            if exc.errno == errno.ENOENT:
                raise _Unavailable(
                    "IPVS is not available: load the ip_vs kernel module "
                    "(no generic netlink family IPVS)"
                ) from None
            raise _Unavailable(f"IPVS is not available: {_reason(exc)}") from None
        except (OSError, IndexError, KeyError, struct.error) as exc:
            raise _Unavailable(f"IPVS is not available: {_reason(exc)}") from None

    def batch(self, requests: Sequence[Request]) -> dict[int, int]:
        return self.sock.batch(requests)

    def failed(self, codes: set[int]) -> None:
        if codes & {errno.ENOENT, errno.EOPNOTSUPP}:
            self.sock.forget(IPVS_FAMILY)  # perhaps the module was reloaded: ask again next time

    def state(self) -> tuple[frozenset[Service], frozenset[Dest], frozenset[Daemon]]:
        family = self.family()
        dump = self.sock.dump
        try:
            services = []
            for msg in dump(family, ipvswire.request(ipvswire.CMD_GET_SERVICE)):
                svc = ipvswire.service_from(msg)
                if svc is not None:
                    services.append(svc)
            dests = []
            for svc in services:
                key = key_attrs(svc.key)
                for msg in dump(family, ipvswire.request(ipvswire.CMD_GET_DEST, key)):
                    dest = ipvswire.dest_from(svc.key, msg)
                    if dest is not None:
                        dests.append(dest)
            daemons = []
            for msg in dump(family, ipvswire.request(ipvswire.CMD_GET_DAEMON)):
                daemon = ipvswire.daemon_from(msg)
                if daemon is not None:
                    daemons.append(daemon)
        except KernelSaid as exc:
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise _Unavailable(
                    "IPVS is not available: permission denied (needs root or CAP_NET_ADMIN)"
                ) from None
            self.failed({exc.errno})
            raise _Unavailable(f"IPVS could not be read: {_reason(exc)}") from None
        except OSError as exc:
            raise _Unavailable(f"IPVS could not be read: {_reason(exc)}") from None
        except (KeyError, ValueError, struct.error) as exc:
            raise _Unavailable(f"IPVS could not be read: unexpected answer ({exc!r})") from None
        return frozenset(services), frozenset(dests), frozenset(daemons)


# --- the table ---------------------------------------------------------------------------------


@frozen
class Handler:
    """How the netlink kernel carries out one operation type.

    With a `channel`, `run(kernel, op)` returns the operation's request for that channel (with
    `many`, its requests: it stands for many), sent in a batch with the consecutive operations
    of the same channel; without one, it carries `op` out.
    """

    channel: str | None
    run: Callable[[NetlinkKernel, Any], Any]
    many: bool = False


def _ipvs_row(cmd: int, attrs: Callable[[Any], bytes]) -> Handler:
    """The row of an IPVS operation: command `cmd` with the attributes `attrs(op)`."""
    return Handler("genl", lambda k, op: (k._ipvs.family(), 0, ipvswire.request(cmd, attrs(op))))


def _dest_row(cmd: int, full: bool) -> Handler:
    """The row of a real server's operation (thousands per activation: from kept parts)."""
    return Handler(
        "genl", lambda k, op: (k._ipvs.family(), 0, ipvswire.dest_request(cmd, op.dest, full))
    )


HANDLERS: dict[type, Handler] = {
    operations.AddAddress: Handler("rtnl", lambda k, op: k._route.request(op.address, True)),
    operations.DelAddress: Handler("rtnl", lambda k, op: k._route.request(op.address, False)),
    operations.SetSysctl: Handler(None, lambda k, op: sysctl.write(op.sysctl)),
    operations.AddService: _ipvs_row(CMD_NEW_SERVICE, lambda op: service_attrs(op.service)),
    operations.EditService: _ipvs_row(CMD_SET_SERVICE, lambda op: service_attrs(op.service)),
    operations.DelService: _ipvs_row(CMD_DEL_SERVICE, lambda op: key_attrs(op.service.key)),
    operations.AddDest: _dest_row(CMD_NEW_DEST, True),
    operations.AddDests: Handler(
        "genl",
        lambda k, op: ipvswire.dest_requests(k._ipvs.family(), op.services, op.servers),
        many=True,
    ),
    operations.EditDest: _dest_row(CMD_SET_DEST, True),
    operations.DelDest: _dest_row(CMD_DEL_DEST, False),
    operations.StartDaemon: _ipvs_row(CMD_NEW_DAEMON, lambda op: daemon_attrs(op.daemon, True)),
    operations.StopDaemon: _ipvs_row(CMD_DEL_DAEMON, lambda op: daemon_attrs(op.daemon, False)),
    operations.SendGarp: Handler("frames", lambda k, op: k._frames.arp(op.ip, op.dev, op.reply)),
    operations.SendNa: Handler("frames", lambda k, op: k._frames.na(op.ip, op.dev)),
    operations.AddClsact: Handler("rtnl", lambda k, op: k._route.tc_request(op)),
    operations.AddFilter: Handler("rtnl", lambda k, op: k._route.tc_request(op)),
    operations.DelFilter: Handler("rtnl", lambda k, op: k._route.tc_request(op)),
}


def _unsupported(_kernel: NetlinkKernel, op: Any) -> None:
    raise OSError(errno.EOPNOTSUPP, f"unsupported operation {type(op).__name__}")


_UNSUPPORTED = Handler(None, _unsupported)


# --- the kernel --------------------------------------------------------------------------------


class NetlinkKernel:
    """The `Kernel` of real mode, used from one thread; opens its sockets on first use.

    `ipvs_problem` is None while IPVS can be read, else why not (set by observe(), for one log
    line); observe() then reports ipvs=False with no services, real servers or daemons.
    """

    def __init__(self) -> None:
        self.ipvs_problem: str | None = None
        self._route = _Route()
        self._ipvs = _Ipvs()
        self._frames = FrameSender()
        self._prepared: dict[int, _Run] = {}  # by id() of its first operation
        self._channels: dict[str, _Channel] = {
            "rtnl": self._route,
            "genl": self._ipvs,
            "frames": self._frames,
        }

    def observe(self, sysctls: frozenset[str], tc_dev: str | None = None) -> KernelState:
        """Addresses, the asked-for sysctls, IPVS, and with `tc_dev` our steering filters on
        it; KernelError if addresses cannot be read. A device whose index changed drops the
        last preparation (its requests hold indexes)."""
        indexes = self._route.indexes()
        try:
            addresses = self._route.addresses()
        except (OSError, ValueError, KeyError, struct.error) as exc:
            raise KernelError("reading addresses", _reason(exc)) from None
        if self._route.indexes() != indexes:
            self._prepared = {}
        values = {path: sysctl.read(path) for path in sorted(sysctls)}
        try:
            services, dests, daemons = self._ipvs.state()
            self.ipvs_problem = None
        except _Unavailable as exc:
            self.ipvs_problem = str(exc)
            services, dests, daemons = frozenset(), frozenset(), frozenset()
        return KernelState(
            addresses=addresses,
            sysctls=values,
            services=services,
            dests=dests,
            daemons=daemons,
            ipvs=self.ipvs_problem is None,
            tc=None if tc_dev is None else self._route.tc_state(tc_dev),
        )

    def apply(self, op: operations.Operation) -> None:
        """Carry out one operation; KernelError with the kernel's reason if it fails."""
        errors = self.apply_many((op,))
        if errors:
            raise errors[0]

    def apply_many(self, ops: Iterable[operations.Operation]) -> list[KernelError]:
        """Carry out every operation in order, going on after a failure; the failures, in order.
        A run of operations prepared together joins its channel's batch in one step."""
        ops = tuple(ops)
        errors: list[KernelError] = []
        pending: list[tuple[Owner, Any]] = []
        channel: str | None = None
        self._frames.forget_macs()  # a device's MAC is read once per call
        prepared = self._prepared
        i = 0
        while i < len(ops):
            op = ops[i]
            run = prepared.get(id(op))
            if run is not None and ops[i : i + len(run.ops)] == run.ops:  # (the same values)
                if run.channel != channel:
                    errors += self._flush(channel, pending)
                    pending, channel = [], run.channel
                pending += run.pairs
                i += len(run.ops)
                if len(pending) >= BATCH and channel != "frames":
                    errors += self._flush(channel, pending)
                    pending = []
                continue
            i += 1
            handler = HANDLERS.get(type(op), _UNSUPPORTED)
            if handler.channel != channel:
                errors += self._flush(channel, pending)
                pending, channel = [], handler.channel
            try:
                request = handler.run(self, op)
            except Exception as exc:  # a malformed operation fails alone; the helper never crashes
                errors += self._flush(channel, pending)
                pending = []
                errors.append(KernelError(op, _reason(exc)))
                continue
            if handler.many:  # each request made as a datagram has room for it
                parts = zip(zip(repeat(op), count()), request)  # (op, index): the one it is
                while True:
                    pending += islice(parts, BATCH - len(pending))
                    if len(pending) < BATCH:
                        break
                    errors += self._flush(channel, pending)
                    pending = []
            elif channel is not None:
                pending.append((op, request))
                if len(pending) == BATCH and channel != "frames":
                    errors += self._flush(channel, pending)  # a datagram's worth: send it
                    pending = []
        errors += self._flush(channel, pending)
        return errors

    def prepare(self, ops: Sequence[operations.Operation]) -> None:
        """Encode the operations now, in runs of one type, and the part the real servers of a
        service added share; the frames of a round are built and laid out for their sendmmsg.
        What a kernel error makes doubtful (a device index, the IPVS family id) is dropped with
        the whole preparation (`_flush`)."""
        self._frames.forget_macs()
        self._prepared = {}
        frames: list[Any] = []
        run: list[tuple[operations.Operation, Any]] = []
        for op in (*ops, None):  # (None ends the last run)
            handler = HANDLERS.get(type(op), _UNSUPPORTED)
            request = None
            if handler.channel is not None and not handler.many:
                try:
                    request = handler.run(self, op)
                except Exception:  # applying it will say why
                    pass
            if run and (request is None or type(op) is not type(run[0][0])):
                first = run[0][0]
                channel = HANDLERS[type(first)].channel
                self._prepared[id(first)] = _Run(channel, tuple(o for o, _ in run), run)
                run = []
            if request is not None:
                run.append((op, request))
                if handler.channel == "frames":  # (a device, a kind, an address: the MAC is
                    frames.append(request)  # read when the round is sent, its frames built anew)
        self._frames.prepare(frames)
        added = (op.service.key for op in ops if isinstance(op, operations.AddService))
        ipvswire.prepare_real_servers(added)  # their real servers follow

    def close(self) -> None:
        self._route.close()
        self._ipvs.close()
        self._frames.close()
        self._prepared = {}

    def _flush(self, channel: str | None, pending: list[tuple[Owner, Any]]) -> list[KernelError]:
        if not pending or channel is None:
            return []
        chan = self._channels[channel]
        try:
            failed = chan.batch([request for _, request in pending])
        except OSError as exc:  # the socket could not be opened
            self._prepared = {}
            return [KernelError(_one(owner), _reason(exc)) for owner, _ in pending]
        if failed:
            chan.failed(set(failed.values()))
            self._prepared = {}
        return [
            KernelError(_one(pending[i][0]), os.strerror(code))
            for i, code in sorted(failed.items())
        ]


@frozen
class _Run:
    """Operations of one type prepared together, and each one's request for `channel`."""

    channel: str
    ops: tuple[operations.Operation, ...]
    pairs: list[tuple[operations.Operation, Any]]


# what a request carries out: an operation, or one of those an AddDests stands for, by index
Owner = Union[operations.Operation, tuple[operations.AddDests, int]]


def _one(owner: Owner) -> operations.Operation:
    return owner[0].part(owner[1]) if isinstance(owner, tuple) else owner
