"""Carry out a plan on a kernel, in order, collecting failures instead of stopping.

A failed operation does not stop the rest: a balancer that is missing one real server still
serves more clients than none, and the next refresh retries what failed. Kernels that can batch
(netlink) offer `apply_many`, which is used when present.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import KernelError
from .kernel import Kernel
from .operations import Operation


def execute(ops: Sequence[Operation], kernel: Kernel) -> list[KernelError]:
    """Apply every operation; return the failures, each naming its operation."""
    apply_many = getattr(kernel, "apply_many", None)
    if apply_many is not None:
        return list(apply_many(ops))
    failures: list[KernelError] = []
    for op in ops:
        try:
            kernel.apply(op)
        except KernelError as exc:
            failures.append(exc)
    return failures
