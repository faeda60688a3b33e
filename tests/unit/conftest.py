"""Shared fixtures for the pure tests: a fake clock and a kernel as a fresh frontend has it."""

from __future__ import annotations

import pytest

from cgp_ipvs_helper.core.engine import Helper
from cgp_ipvs_helper.core.protocol import Reply, Response, render
from cgp_ipvs_helper.kernel.testing import FakeKernel
from cgp_ipvs_helper.plan.model import Address, KernelState, Settings
from cgp_ipvs_helper.plan.planner import sysctl_paths

VIPS = ("198.51.100.10", "198.51.100.11")
SELF = "192.0.2.11"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fresh_state(iface: str = "eth0", ip: str = SELF) -> KernelState:
    """A frontend after boot: lo, the LAN address, ARP sysctls at their defaults."""
    return KernelState(
        addresses=(Address("127.0.0.1", "lo", 8), Address(ip, iface, 24)),
        sysctls={p: "0" for p in sysctl_paths(iface)},
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel(fresh_state())


def make_helper(kernel: FakeKernel, clock: Clock, vips=VIPS, **settings) -> Helper:
    s = Settings(**{"vipfile": "/etc/sysconfig/vipaddrs", **settings})
    # the fake kernel's eth0: the machine running the tests may have none
    return Helper(
        s, kernel, clock=clock, load=lambda _path: tuple(vips), link_exists=lambda _dev: True
    )


@pytest.fixture
def helper(kernel: FakeKernel, clock: Clock) -> Helper:
    h = make_helper(kernel, clock)
    h.start()
    kernel.take()
    return h


def ok(seq: str, text: str = "") -> Response:
    return Response(seq, "OK", text)


def error(seq: str, text: str) -> Response:
    return Response(seq, "ERROR", text)


def infos(reply: Reply) -> list[str]:
    """The text of each info line, in order (operations as their shell commands)."""
    return [text for i in reply.infos for text in i.texts()]


def kinds(ops) -> list[str]:
    return [type(op).__name__ for op in ops]


def info_lines(reply: Reply) -> list[str]:
    """The info lines as CGP reads them (rendered, escaped)."""
    return [line[2:] for line in render(reply) if line.startswith("* ")]
