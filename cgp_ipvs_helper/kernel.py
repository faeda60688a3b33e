"""The one narrow door to privileged kernel work.

Everything that reads or changes the kernel goes through a `Kernel`: the netlink kernel
(real mode), the dry-run kernel (-m) and the in-memory fake for tests all satisfy it, so the
planner and the session never know which one they drive.
"""

from __future__ import annotations

from typing import Protocol

from .model import KernelState
from .operations import Operation


class Kernel(Protocol):
    """Read the state the planner needs; apply one operation at a time."""

    def observe(self, sysctls: frozenset[str]) -> KernelState:
        """Addresses, the asked-for sysctl paths, IPVS services, real servers, sync daemons."""

    def apply(self, op: Operation) -> None:
        """Carry out `op`; raise KernelError with the kernel's reason if it fails."""

    def close(self) -> None:
        """Release sockets."""


# Optional, used when a kernel has them (the netlink kernel does):
#   apply_many(ops) -> list[KernelError]: apply in order, batched; failures in order.
#   ipvs_problem: str | None: why IPVS cannot be used right now (module missing, no privilege).
