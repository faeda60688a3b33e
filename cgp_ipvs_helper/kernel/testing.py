"""Test helpers that ship with the package: a recording fake kernel."""

from __future__ import annotations

from cgp_ipvs_helper.errors import KernelError
from cgp_ipvs_helper.kernel.memory import MemoryKernel
from cgp_ipvs_helper.plan.model import KernelState
from cgp_ipvs_helper.plan.operations import Operation


class FakeKernel(MemoryKernel):
    """A MemoryKernel that records every operation applied, in order, and can be made to fail.

    `fail` maps an operation class to the reason it fails with, to test error paths.
    """

    def __init__(self, state: KernelState | None = None) -> None:
        super().__init__(state)
        self.applied: list[Operation] = []
        self.fail: dict[type, str] = {}

    def apply(self, op: Operation) -> None:
        reason = self.fail.get(type(op))
        if reason is not None:
            raise KernelError(op, reason)
        super().apply(op)
        self.applied.append(op)

    def take(self) -> list[Operation]:
        """The operations applied since the last call."""
        ops, self.applied = self.applied, []
        return ops
