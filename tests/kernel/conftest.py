"""Kernel tests run only inside user-mode Linux: fail loudly (never skip) anywhere else. The
fixtures the kernel tests share: the two-namespace box, and a group per family (groups.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lab.box import Box, open_box
from lab.group import Group
from lab.lan import unique
from tests.kernel.groups import IPV4, Family


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


@pytest.fixture
def family(request: pytest.FixtureRequest) -> Family:
    """IPV4 unless the test is parametrized (BOTH, ONLY_IPV6)."""
    return getattr(request, "param", IPV4)


@pytest.fixture
def group(family: Family) -> Iterator[Group]:
    """fe1..fe3, a client with the family's source addresses, and a server (lab/group.py)."""
    with Group(unique("g"), family.entries, family.sources, server=True, ipv6=family.ipv6) as g:
        yield g
