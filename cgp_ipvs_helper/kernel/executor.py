"""Carry out a plan on a kernel, in order, collecting failures instead of stopping.

A failed operation does not stop the rest: a balancer that is missing one real server still
serves more clients than none, and the next refresh retries what failed. The kernel batches
what it can (`Kernel.apply_many`).
"""

from __future__ import annotations

from collections.abc import Sequence

from cgp_ipvs_helper.errors import KernelError
from cgp_ipvs_helper.kernel.interface import Kernel
from cgp_ipvs_helper.plan.operations import Operation


def execute(ops: Sequence[Operation], kernel: Kernel) -> list[KernelError]:
    """Apply every operation; return the failures, each naming its operation."""
    return kernel.apply_many(ops)
