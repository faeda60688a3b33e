"""A kernel kept in memory: the -m dry run's stand-in and the unit tests' fake.

It accepts and refuses exactly what the real kernel does for our operations (adding what exists,
deleting what is absent), with the kernel's own error texts, so a plan that works here is a plan
the kernel takes. It never reaches the real kernel.
"""

from __future__ import annotations

import errno
import os

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


def _fail(op: Operation, code: int) -> KernelError:
    return KernelError(op, os.strerror(code))


class MemoryKernel:
    """Holds a KernelState and changes it as the kernel would."""

    def __init__(self, state: KernelState | None = None) -> None:
        state = state or KernelState()
        self.addresses: list[Address] = list(state.addresses)
        self.sysctls: dict[str, str | None] = dict(state.sysctls)
        self.services: dict[ServiceKey, Service] = {s.key: s for s in state.services}
        self.dests: dict[tuple[ServiceKey, str], Dest] = {(d.service, d.ip): d for d in state.dests}
        self.daemons: set[Daemon] = set(state.daemons)

    def observe(self, sysctls: frozenset[str]) -> KernelState:
        return KernelState(
            addresses=tuple(self.addresses),
            sysctls={p: self.sysctls.get(p) for p in sysctls},
            services=frozenset(self.services.values()),
            dests=frozenset(self.dests.values()),
            daemons=frozenset(self.daemons),
        )

    def close(self) -> None:
        """Nothing to release."""

    def apply(self, op: Operation) -> None:
        if isinstance(op, AddAddress):
            if self._find(op.address) is not None:
                raise _fail(op, errno.EEXIST)
            self.addresses.append(op.address)
        elif isinstance(op, DelAddress):
            found = self._find(op.address)
            if found is None:
                raise _fail(op, errno.EADDRNOTAVAIL)
            self.addresses.remove(found)
        elif isinstance(op, SetSysctl):
            if op.sysctl.path in self.sysctls and self.sysctls[op.sysctl.path] is None:
                raise _fail(op, errno.ENOENT)
            self.sysctls[op.sysctl.path] = op.sysctl.value
        elif isinstance(op, (AddService, EditService, DelService)):
            self._service(op)
        elif isinstance(op, (AddDest, EditDest, DelDest)):
            self._dest(op)
        elif isinstance(op, StartDaemon):
            if any(d.state == op.daemon.state for d in self.daemons):
                raise _fail(op, errno.EEXIST)
            self.daemons.add(op.daemon)
        elif isinstance(op, StopDaemon):
            running = {d for d in self.daemons if d.state == op.daemon.state}
            if not running:
                raise _fail(op, errno.ESRCH)
            self.daemons -= running
        elif isinstance(op, SendGarp):
            pass  # a frame on the wire changes no state; FakeKernel records it like any op
        else:
            raise TypeError(f"not an operation: {op!r}")

    def _find(self, address: Address) -> Address | None:
        for a in self.addresses:
            if a.ip == address.ip and a.dev == address.dev:
                return a
        return None

    def _service(self, op: AddService | EditService | DelService) -> None:
        key = op.service.key
        exists = key in self.services
        if isinstance(op, AddService) and exists:
            raise _fail(op, errno.EEXIST)
        if not isinstance(op, AddService) and not exists:
            raise _fail(op, errno.ESRCH)
        if isinstance(op, DelService):
            del self.services[key]
            self.dests = {k: d for k, d in self.dests.items() if k[0] != key}
        else:
            self.services[key] = op.service

    def _dest(self, op: AddDest | EditDest | DelDest) -> None:
        d = op.dest
        if d.service not in self.services:
            raise _fail(op, errno.ESRCH)
        exists = (d.service, d.ip) in self.dests
        if isinstance(op, AddDest) and exists:
            raise _fail(op, errno.EEXIST)
        if not isinstance(op, AddDest) and not exists:
            raise _fail(op, errno.ENOENT)
        if isinstance(op, DelDest):
            del self.dests[(d.service, d.ip)]
        else:
            self.dests[(d.service, d.ip)] = d
