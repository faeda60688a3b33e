"""The real-mode kernel: addresses and IPVS over netlink, sysctls through /proc/sys, gratuitous
ARP and IPv6 neighbour advertisements on packet sockets; every operation type is carried out as
its row of `HANDLERS` says.

Real mode never forks per change. Measured in the user-mode kernel: pyroute2's
IPVS.service("add") 2.1-2.8 ms a call, a forked `ipvsadm -A` 26-48 ms, an operation here batched
11-13 us (sockets.py has the figures). Only this module and the ones it is built from (nlwire,
ipvswire, nlsocket) import pyroute2, and for its constants only.

To carry out a new operation type: one row in `HANDLERS`. A row with a channel encodes the
operation into a request of that channel (a netlink message; a gratuitous ARP frame's device
and address); consecutive operations of the same channel travel together in batches (netlink
datagrams of many messages, one sendmmsg of many frames), which changes no order of effects. A
row without one carries the operation out at once. A new netlink protocol is one more channel
(channels.py): a socket and what its failures mean.

What an ACTIVATE from standby sends is mostly built while standby (`prepare`): runs of
operations of one type, encoded, which join their batch in one step. Its real servers, one
AddDests per family, are made as a datagram has room for them (nlsocket.BATCH requests), so the
requests of the next datagram reuse the memory of the last: holding the 4,096 real servers of a
dual-stack /24 + /120 encoded at once cost a few hundred page faults, each tens of microseconds
in the user-mode kernel.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Collection, Iterable, Sequence
from itertools import count, islice, repeat
from typing import Any, Callable, Union

from attrs import frozen

from cgp_ipvs_helper.errors import KernelError
from cgp_ipvs_helper.kernel import sysctl
from cgp_ipvs_helper.kernel.frames.arp import FrameSender
from cgp_ipvs_helper.kernel.interface import Kernel
from cgp_ipvs_helper.kernel.netlink import ipvs as ipvswire
from cgp_ipvs_helper.kernel.netlink.channels import Channel, Ipvs, Route, Unavailable, reason
from cgp_ipvs_helper.kernel.netlink.ipvs import (
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
from cgp_ipvs_helper.kernel.netlink.sockets import GenericNetlinkSocket, NetlinkSocket
from cgp_ipvs_helper.plan import operations, tcops
from cgp_ipvs_helper.plan.model import GuardState, KernelState, TcState

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


def _dests_row(cmd: int) -> Handler:
    """The row of real servers given, changed or taken as one value (AddDests and its kin)."""
    return Handler(
        "genl",
        lambda k, op: ipvswire.dest_requests(k._ipvs.family(), op.services, op.servers, cmd),
        many=True,
    )


HANDLERS: dict[type, Handler] = {
    operations.AddAddress: Handler("rtnl", lambda k, op: k._route.request(op.address, True)),
    operations.DelAddress: Handler("rtnl", lambda k, op: k._route.request(op.address, False)),
    operations.SetSysctl: Handler(None, lambda k, op: sysctl.write(op.sysctl)),
    operations.AddService: _ipvs_row(CMD_NEW_SERVICE, lambda op: service_attrs(op.service)),
    operations.EditService: _ipvs_row(CMD_SET_SERVICE, lambda op: service_attrs(op.service)),
    operations.DelService: _ipvs_row(CMD_DEL_SERVICE, lambda op: key_attrs(op.service.key)),
    operations.AddDest: _dest_row(CMD_NEW_DEST, True),
    operations.AddDests: _dests_row(CMD_NEW_DEST),
    operations.EditDest: _dest_row(CMD_SET_DEST, True),
    operations.DelDest: _dest_row(CMD_DEL_DEST, False),
    operations.EditDests: _dests_row(CMD_SET_DEST),
    operations.DelDests: _dests_row(CMD_DEL_DEST),
    operations.StartDaemon: _ipvs_row(CMD_NEW_DAEMON, lambda op: daemon_attrs(op.daemon, True)),
    operations.StopDaemon: _ipvs_row(CMD_DEL_DAEMON, lambda op: daemon_attrs(op.daemon, False)),
    operations.SendGarp: Handler("frames", lambda k, op: k._frames.arp(op.ip, op.dev, op.reply)),
    operations.SendNa: Handler("frames", lambda k, op: k._frames.na(op.ip, op.dev)),
    tcops.AddClsact: Handler("rtnl", lambda k, op: k._route.tc_request(op)),
    tcops.AddFilter: Handler("rtnl", lambda k, op: k._route.tc_request(op)),
    tcops.DelFilter: Handler("rtnl", lambda k, op: k._route.tc_request(op)),
    tcops.AddGuard: Handler("rtnl", lambda k, op: k._route.tc_request(op)),
    tcops.DelGuard: Handler("rtnl", lambda k, op: k._route.tc_request(op)),
}


def _unsupported(_kernel: NetlinkKernel, op: Any) -> None:
    raise OSError(errno.EOPNOTSUPP, f"unsupported operation {type(op).__name__}")


_UNSUPPORTED = Handler(None, _unsupported)


# --- the kernel --------------------------------------------------------------------------------


class NetlinkKernel(Kernel):
    """The `Kernel` of real mode, used from one thread; opens its sockets on first use.

    `ipvs_problem` is None while IPVS can be read, else why not (set by observe(), for one log
    line); observe() then reports ipvs=False with no services, real servers or daemons.
    """

    def __init__(
        self,
        route: NetlinkSocket | None = None,
        generic: GenericNetlinkSocket | None = None,
        frames: FrameSender | None = None,
    ) -> None:
        """Sockets given are used instead of the kernel's own (a test's fakes)."""
        self.ipvs_problem: str | None = None
        self._route = Route(route)
        self._ipvs = Ipvs(generic)
        self._frames = frames or FrameSender()
        self._prepared: dict[operations.Operation, _Run] = {}  # by its first operation
        self._channels: dict[str, Channel] = {
            "rtnl": self._route,
            "genl": self._ipvs,
            "frames": self._frames,
        }

    def read(self, sysctls: frozenset[str], tables: bool = True) -> KernelState:
        """Addresses, the asked-for sysctls, IPVS; KernelError if addresses cannot be read. A
        device whose index changed drops the last preparation (its requests hold indexes)."""
        indexes = self._route.indexes()
        try:
            addresses = self._route.addresses()
        except (OSError, ValueError, KeyError, struct.error) as exc:
            raise KernelError("reading addresses", reason(exc)) from None
        if self._route.indexes() != indexes:
            self._prepared = {}
        values = {path: sysctl.read(path) for path in sorted(sysctls)}
        try:
            services, dests, daemons = self._ipvs.state(tables)
            self.ipvs_problem = None
        except Unavailable as exc:
            self.ipvs_problem = str(exc)
            services, dests, daemons = frozenset(), frozenset(), frozenset()
        return KernelState(
            addresses=addresses,
            sysctls=values,
            services=services,
            dests=dests,
            daemons=daemons,
            ipvs=self.ipvs_problem is None,
        )

    def read_tc(self, dev: str, neighbours: Collection[str] | None) -> TcState:
        """What the steering needs of `dev` (channels.Route.tc_state: `neighbours` are resolved
        as a side effect, as a packet to them would be)."""
        return self._route.tc_state(dev, neighbours)

    def read_guard(self, dev: str) -> GuardState:
        return self._route.guard_state(dev)

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
        pending = _Pending(self)
        self._frames.forget_macs()  # a device's MAC is read once per call
        prepared = self._prepared
        i = 0
        while i < len(ops):
            op = ops[i]
            run = prepared.get(op)
            if run is not None and ops[i : i + len(run.ops)] == run.ops:  # (the same values)
                errors += pending.add(run.channel, run.pairs)
                i += len(run.ops)
                continue
            i += 1
            handler = HANDLERS.get(type(op), _UNSUPPORTED)
            if handler.channel is None:
                errors += pending.flush()
            try:
                request = handler.run(self, op)
            except Exception as exc:  # a malformed operation fails alone; the helper never crashes
                errors += pending.flush()
                errors.append(KernelError(op, reason(exc)))
                continue
            if handler.many:  # each request made as a datagram has room for it
                errors += pending.add(handler.channel, zip(zip(repeat(op), count()), request))
            elif handler.channel is not None:
                errors += pending.add(handler.channel, ((op, request),))
        return errors + pending.flush()

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
                self._prepared[first] = _Run(channel, tuple(o for o, _ in run), run)
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

    def _flush(self, channel: str, pending: list[tuple[Owner, Any]]) -> list[KernelError]:
        chan = self._channels[channel]
        try:
            failed = chan.batch([request for _, request in pending])
        except OSError as exc:  # the socket could not be opened
            self._prepared = {}
            return [KernelError(_one(owner), reason(exc)) for owner, _ in pending]
        if failed:
            chan.failed(set(failed.values()))
            self._prepared = {}
        return [
            KernelError(_one(pending[i][0]), os.strerror(code))
            for i, code in sorted(failed.items())
        ]


class _Pending:
    """The requests of one channel waiting to go together: sent when another channel's turn
    comes, when an operation is carried out at once or fails, at the end, and whenever the
    channel's `limit` of them (a datagram's worth) is reached."""

    def __init__(self, kernel: NetlinkKernel) -> None:
        self.kernel, self.channel = kernel, ""
        self.requests: list[tuple[Owner, Any]] = []

    def add(self, channel: str, requests: Iterable[tuple[Owner, Any]]) -> list[KernelError]:
        errors = self.flush() if channel != self.channel else []
        self.channel, limit = channel, self.kernel._channels[channel].limit
        if not limit:
            self.requests += requests
            return errors
        more = iter(requests)
        while True:
            self.requests += islice(more, limit - len(self.requests))
            if len(self.requests) < limit:
                return errors
            errors += self.flush()

    def flush(self) -> list[KernelError]:
        requests, self.requests = self.requests, []
        return self.kernel._flush(self.channel, requests) if requests else []


@frozen
class _Run:
    """Operations of one type prepared together, and each one's request for `channel`."""

    channel: str
    ops: tuple[operations.Operation, ...]
    pairs: list[tuple[operations.Operation, Any]]


# what a request carries out: an operation, or one of those an AddDests (kin) stands for, by index
Owner = Union[operations.Operation, tuple[operations.ManyDests, int]]


def _one(owner: Owner) -> operations.Operation:
    return owner[0].part(owner[1]) if isinstance(owner, tuple) else owner
