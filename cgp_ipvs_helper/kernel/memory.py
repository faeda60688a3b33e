"""A kernel kept in memory: the -m dry run's stand-in and the unit tests' fake.

It accepts and refuses exactly what the real kernel does for our operations (adding what exists,
deleting what is absent), with the kernel's own error texts, so a plan that works here is a plan
the kernel takes. It never reaches the real kernel. Each operation type is one row of
`HANDLERS`, as in the netlink kernel.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Callable

from cgp_ipvs_helper.errors import KernelError
from cgp_ipvs_helper.kernel.interface import Kernel
from cgp_ipvs_helper.plan import operations, tcops
from cgp_ipvs_helper.plan.guard import Guard
from cgp_ipvs_helper.plan.model import (
    Address,
    Daemon,
    Dest,
    GuardState,
    KernelState,
    Service,
    ServiceKey,
    TcState,
)
from cgp_ipvs_helper.plan.steering import RangeFilter, VipFilter


def _fail(op: operations.Operation, code: int) -> KernelError:
    return KernelError(op, os.strerror(code))


class MemoryKernel(Kernel):
    """Holds a KernelState and changes it as the kernel would."""

    ipvs_problem: str | None = None  # IPVS is always there

    def __init__(self, state: KernelState | None = None) -> None:
        state = state or KernelState()
        self.addresses: list[Address] = list(state.addresses)
        self.sysctls: dict[str, str | None] = dict(state.sysctls)
        self.services: dict[ServiceKey, Service] = {s.key: s for s in state.services}
        self.dests: dict[tuple[ServiceKey, str], Dest] = {(d.service, d.ip): d for d in state.dests}
        self.daemons: set[Daemon] = set(state.daemons)
        # the LAN interface's ingress (the only device a helper puts filters on)
        tc = state.tc or TcState()
        guard = state.guard or GuardState()
        self.ingress: str | None = tc.ingress or guard.qdisc  # one qdisc for both hooks
        self.filters: dict[tuple[int, int, int], VipFilter | RangeFilter | None] = {
            (pref, chain, handle): f for pref, chain, handle, f in tc.filters
        }
        self.mac = tc.mac  # the interface's, and its neighbours': what the real one held
        self.neighbours: dict[str, str] = dict(tc.neighbours)

        # its egress: the takeover's reset guards
        self.guards: dict[tuple[int, int], Guard | None] = {
            (pref, handle): g for pref, handle, g in guard.guards
        }

    def read(self, sysctls: frozenset[str], tables: bool = True) -> KernelState:
        return KernelState(
            addresses=tuple(self.addresses),
            sysctls={p: self.sysctls.get(p) for p in sysctls},
            services=frozenset(self.services.values() if tables else ()),
            dests=frozenset(self.dests.values() if tables else ()),
            daemons=frozenset(self.daemons),
        )

    def read_tc(self, dev: str, neighbours: Collection[str] | None) -> TcState:
        found = frozenset((*key, f) for key, f in self.filters.items())
        macs = {
            ip: m for ip, m in self.neighbours.items() if neighbours is None or ip in neighbours
        }
        return TcState(self.ingress, found, self.mac, frozenset(macs.items()))

    def read_guard(self, dev: str) -> GuardState:
        return GuardState(self.ingress, frozenset((*key, g) for key, g in self.guards.items()))

    def close(self) -> None:
        """Nothing to release."""

    def prepare(self, ops: Sequence[operations.Operation]) -> None:
        """Nothing to build ahead: applying here changes a few Python objects."""

    def apply(self, op: operations.Operation) -> None:
        handler = HANDLERS.get(type(op))
        if handler is None:
            raise TypeError(f"not an operation: {op!r}")
        handler(self, op)

    def apply_many(self, ops: Iterable[operations.Operation]) -> list[KernelError]:
        """Each operation through apply() (which a subclass may record), going on after a
        failure; the failures, in order. An AddDests (EditDests, DelDests) is carried out as
        its values."""
        failures: list[KernelError] = []
        for op in operations.each(ops):
            try:
                self.apply(op)
            except KernelError as exc:
                failures.append(exc)
        return failures

    # --- one handler per operation type ----------------------------------------------------------

    def _add_address(self, op: operations.AddAddress) -> None:
        if self._find(op.address) is not None:
            raise _fail(op, errno.EEXIST)
        self.addresses.append(op.address)

    def _del_address(self, op: operations.DelAddress) -> None:
        found = self._find(op.address)
        if found is None:
            raise _fail(op, errno.EADDRNOTAVAIL)
        self.addresses.remove(found)

    def _set_sysctl(self, op: operations.SetSysctl) -> None:
        if op.sysctl.path in self.sysctls and self.sysctls[op.sysctl.path] is None:
            raise _fail(op, errno.ENOENT)
        self.sysctls[op.sysctl.path] = op.sysctl.value

    def _add_service(self, op: operations.AddService) -> None:
        if op.service.key in self.services:
            raise _fail(op, errno.EEXIST)
        self.services[op.service.key] = op.service

    def _edit_service(self, op: operations.EditService) -> None:
        if op.service.key not in self.services:
            raise _fail(op, errno.ESRCH)
        self.services[op.service.key] = op.service

    def _del_service(self, op: operations.DelService) -> None:
        key = op.service.key
        if key not in self.services:
            raise _fail(op, errno.ESRCH)
        del self.services[key]
        self.dests = {k: d for k, d in self.dests.items() if k[0] != key}

    def _add_dest(self, op: operations.AddDest) -> None:
        if self._dest_exists(op, op.dest):
            raise _fail(op, errno.EEXIST)
        self.dests[(op.dest.service, op.dest.ip)] = op.dest

    def _dests(self, op: operations.AddDests | operations.EditDests | operations.DelDests) -> None:
        for one in op.each():
            self.apply(one)

    def _edit_dest(self, op: operations.EditDest) -> None:
        if not self._dest_exists(op, op.dest):
            raise _fail(op, errno.ENOENT)
        self.dests[(op.dest.service, op.dest.ip)] = op.dest

    def _del_dest(self, op: operations.DelDest) -> None:
        if not self._dest_exists(op, op.dest):
            raise _fail(op, errno.ENOENT)
        del self.dests[(op.dest.service, op.dest.ip)]

    def _start_daemon(self, op: operations.StartDaemon) -> None:
        if any(d.state == op.daemon.state for d in self.daemons):
            raise _fail(op, errno.EEXIST)
        self.daemons.add(op.daemon)

    def _stop_daemon(self, op: operations.StopDaemon) -> None:
        running = {d for d in self.daemons if d.state == op.daemon.state}
        if not running:
            raise _fail(op, errno.ESRCH)
        self.daemons -= running

    def _send_frame(self, op: operations.SendGarp | operations.SendNa) -> None:
        """A frame on the wire changes no state; FakeKernel records it like any op."""

    def _add_clsact(self, op: tcops.AddClsact) -> None:
        if self.ingress is not None:
            raise _fail(op, errno.EEXIST)
        self.ingress = "clsact"

    def _add_filter(self, op: tcops.AddFilter) -> None:
        key = (op.filter.pref, op.filter.chain, op.filter.handle)
        if self._filter_exists(op, key):
            raise _fail(op, errno.EEXIST)
        self.filters[key] = op.filter

    def _del_filter(self, op: tcops.DelFilter) -> None:
        key = (op.pref, op.chain, op.handle)
        if not self._filter_exists(op, key):
            raise _fail(op, errno.ENOENT)
        del self.filters[key]

    def _add_guard(self, op: tcops.AddGuard) -> None:
        key = (op.guard.pref, op.guard.handle)
        if self.ingress != "clsact":
            raise _fail(op, errno.EINVAL)  # no egress hook
        if key in self.guards:
            raise _fail(op, errno.EEXIST)
        self.guards[key] = op.guard

    def _del_guard(self, op: tcops.DelGuard) -> None:
        key = (op.pref, op.handle)
        if key not in self.guards:
            raise _fail(op, errno.ENOENT)
        del self.guards[key]

    # --- lookups -----------------------------------------------------------------------------

    def _find(self, address: Address) -> Address | None:
        for a in self.addresses:
            if a.ip == address.ip and a.dev == address.dev:
                return a
        return None

    def _dest_exists(self, op: operations.Operation, dest: Dest) -> bool:
        """Whether `dest` is there; ESRCH (as the kernel) if its service is not."""
        if dest.service not in self.services:
            raise _fail(op, errno.ESRCH)
        return (dest.service, dest.ip) in self.dests

    def _filter_exists(self, op: operations.Operation, key: tuple[int, int, int]) -> bool:
        """Whether our filter `key` is there; EINVAL (as the kernel) without an ingress qdisc."""
        if self.ingress is None:
            raise _fail(op, errno.EINVAL)
        return key in self.filters


HANDLERS: dict[type, Callable[[MemoryKernel, Any], None]] = {
    operations.AddAddress: MemoryKernel._add_address,
    operations.DelAddress: MemoryKernel._del_address,
    operations.SetSysctl: MemoryKernel._set_sysctl,
    operations.AddService: MemoryKernel._add_service,
    operations.EditService: MemoryKernel._edit_service,
    operations.DelService: MemoryKernel._del_service,
    operations.AddDest: MemoryKernel._add_dest,
    operations.AddDests: MemoryKernel._dests,
    operations.EditDests: MemoryKernel._dests,
    operations.DelDests: MemoryKernel._dests,
    operations.EditDest: MemoryKernel._edit_dest,
    operations.DelDest: MemoryKernel._del_dest,
    operations.StartDaemon: MemoryKernel._start_daemon,
    operations.StopDaemon: MemoryKernel._stop_daemon,
    operations.SendGarp: MemoryKernel._send_frame,
    operations.SendNa: MemoryKernel._send_frame,
    tcops.AddClsact: MemoryKernel._add_clsact,
    tcops.AddFilter: MemoryKernel._add_filter,
    tcops.DelFilter: MemoryKernel._del_filter,
    tcops.AddGuard: MemoryKernel._add_guard,
    tcops.DelGuard: MemoryKernel._del_guard,
}
