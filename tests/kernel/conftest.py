"""Kernel tests run only inside user-mode Linux: fail loudly (never skip) anywhere else."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lab.box import Box, open_box


@pytest.fixture(autouse=True, scope="session")
def _ipvs_kernel() -> None:
    """A test run outside the lab kernel would prove nothing: say how to run it instead."""
    if not os.path.exists("/proc/net/ip_vs"):
        pytest.fail(
            "no IPVS in this kernel (/proc/net/ip_vs is missing): "
            "run kernel tests through python -m lab.uml -- python -m pytest tests/kernel",
            pytrace=False,
        )
    if os.geteuid() != 0:
        pytest.fail("kernel tests need root: run them through python -m lab.uml", pytrace=False)


@pytest.fixture
def box() -> Iterator[Box]:
    """Two fresh namespaces on a veth pair, the test's thread in "ours" (lab/box.py)."""
    with open_box() as b:
        yield b
