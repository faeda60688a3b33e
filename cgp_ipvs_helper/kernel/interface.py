"""The one narrow door to privileged kernel work.

Everything that reads or changes the kernel goes through a `Kernel`: the netlink kernel
(real mode) and the in-memory kernel (the -m dry run, and the tests' fake) both satisfy it, so
the planner and the session never know which one they drive. Each carries out an operation
type as one row of its own table (`HANDLERS`); a unit test checks that both tables cover every
type of `Operation`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Protocol, runtime_checkable

import attrs

from cgp_ipvs_helper.errors import KernelError
from cgp_ipvs_helper.plan.model import GuardState, KernelState, TcState
from cgp_ipvs_helper.plan.operations import Operation


@runtime_checkable  # so a test can check that every kernel has the whole contract
class Kernel(Protocol):
    """Read the state the planner needs; apply operations in order."""

    ipvs_problem: str | None
    """Why IPVS cannot be used (module missing, no privilege), as of the last observe(); None
    while it can. observe() then reports ipvs=False, without services, real servers, daemons."""

    def observe(
        self,
        sysctls: frozenset[str],
        tc_dev: str | None = None,
        neighbours: Collection[str] | None = None,
        guard_dev: str | None = None,
        tables: bool = True,
    ) -> KernelState:
        """Addresses, the asked-for sysctl paths, IPVS services, real servers (neither without
        `tables`: a step that trusts them as this helper made them), sync daemons;
        with `tc_dev`, also that interface's ingress qdisc, our steering filters, its MAC and
        the MACs of its `neighbours` (None: of every neighbour) (`tc`). The real kernel has
        each of `neighbours` resolved or confirmed for the next read. With `guard_dev`, its qdisc
        and our reset guards on its egress (`guard`). Written once for the kernels that subclass
        this protocol: read(), then read_tc() and read_guard() where asked."""
        state = self.read(sysctls, tables)
        if tc_dev is None and guard_dev is None:
            return state
        tc = None if tc_dev is None else self.read_tc(tc_dev, neighbours)
        return attrs.evolve(
            state, tc=tc, guard=None if guard_dev is None else self.read_guard(guard_dev)
        )

    def read(self, sysctls: frozenset[str], tables: bool = True) -> KernelState:
        """observe() without a device's tc or guard."""

    def read_tc(self, dev: str, neighbours: Collection[str] | None) -> TcState:
        """observe()'s `tc` of `dev` alone, without IPVS or addresses: also what a member whose
        MAC was missing needs looked at again (its neighbours resolved or confirmed likewise)."""

    def read_guard(self, dev: str) -> GuardState:
        """observe()'s `guard` of `dev`."""

    def apply(self, op: Operation) -> None:
        """Carry out `op`; raise KernelError with the kernel's reason if it fails."""

    def apply_many(self, ops: Iterable[Operation]) -> list[KernelError]:
        """Carry out every operation in order, going on after a failure (a balancer missing one
        real server still serves more clients than none); the failures, in order."""

    def prepare(self, ops: Sequence[Operation]) -> None:
        """These operations (or equal ones) may be applied soon: build now what applying them
        will send, so that apply_many() of them only sends. Replaces the last preparation;
        changes nothing in the kernel, and an operation that cannot be built is just not kept."""

    def close(self) -> None:
        """Release sockets."""
