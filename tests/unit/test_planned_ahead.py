"""The ACTIVATE from standby planned ahead (ready.py) as the engine uses it: it reads nothing,
says and does exactly what planning in full says and does, and trusts the last read until the
kernel refuses something or the next refresh."""

from __future__ import annotations

from pathlib import Path

from cgp_ipvs_helper.core.protocol import render
from cgp_ipvs_helper.kernel.testing import FakeKernel
from cgp_ipvs_helper.plan.model import Address, Service, ServiceKey
from cgp_ipvs_helper.plan.operations import AddAddress

from .conftest import Clock, fresh_state, make_helper

VIPS = tuple(f"203.0.113.{i}" for i in range(16))
MEMBERS = "192.0.2.14 192.0.2.11 192.0.2.12"


class CountingKernel(FakeKernel):
    """Counts what the engine asks of the kernel besides applying."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.reads = 0
        self.prepared: list[tuple] = []

    def observe(self, *args, **kwargs):
        self.reads += 1
        return super().observe(*args, **kwargs)

    def prepare(self, ops) -> None:
        self.prepared.append(tuple(ops))


def _started(clock: Clock, vips=VIPS, **settings):
    kernel = CountingKernel(fresh_state())
    h = make_helper(kernel, clock, vips=vips, **settings)
    h.start()
    kernel.take()
    return h, kernel


def test_activate_from_standby_reads_nothing_and_equals_planning_in_full(clock: Clock) -> None:
    for settings in ({}, {"persistence": 0, "weight": 0}):
        h, kernel = _started(clock, **settings)
        full, full_kernel = _started(clock, **settings)
        full.ready = None  # as before: read the kernel, plan everything
        assert h.ready is not None and len(kernel.prepared) == 1
        reads = kernel.reads
        lines = render(h.handle(f"1 ACTIVATE {MEMBERS}"))
        assert kernel.reads == reads  # nothing read
        assert lines == render(full.handle(f"1 ACTIVATE {MEMBERS}"))  # said: byte for byte
        assert kernel.take() == full_kernel.take()  # and done, in the same order
        assert kernel.observe(frozenset()) == full_kernel.observe(frozenset())
        assert h.ready is None  # active: the next ACTIVATE reads the kernel first
        again = "2 ACTIVATE 192.0.2.11"
        assert render(h.handle(again)) == render(full.handle(again))


def test_dual_stack_with_a_member_map_is_planned_ahead_too(tmp_path: Path, clock: Clock) -> None:
    """IPv6 VIPs (real servers: the members' IPv6 addresses from the map, one member without)
    and the map's steering: the same lines and changes as planning in full, nothing read."""
    path = tmp_path / "members"
    path.write_text(
        "192.0.2.14 50000-54999 2001:db8::2\n"
        "192.0.2.11 55000-59999 2001:db8::11\n"
        "192.0.2.12 60000-64999\n"
    )
    vips = VIPS + ("2001:db8:10::", "2001:db8:10::1")
    h, kernel = _started(clock, vips, member_map=str(path))
    full, full_kernel = _started(clock, vips, member_map=str(path))
    full.ready = None
    assert h.ready is not None
    reads = kernel.reads
    lines = render(h.handle(f"1 ACTIVATE {MEMBERS}"))
    assert kernel.reads == reads
    assert lines == render(full.handle(f"1 ACTIVATE {MEMBERS}"))
    assert "* member 192.0.2.12 has no IPv6 address in " in "\n".join(lines)
    assert "-f 1128781528" in "\n".join(lines)  # this host's range's service is there
    assert kernel.take() == full_kernel.take()
    assert kernel.observe(frozenset(), "eth0") == full_kernel.observe(frozenset(), "eth0")


def test_a_quiet_refresh_keeps_the_plan_a_change_makes_a_new_one(clock: Clock) -> None:
    h, kernel = _started(clock)
    first = h.ready
    clock.advance(15)
    h.tick()  # refresh: nothing changed
    assert h.ready is first and len(kernel.prepared) == 1
    kernel.sysctls["net/ipv4/conf/all/arp_ignore"] = "0"  # changed by hand, and repaired:
    clock.advance(15)
    assert "* refresh: the kernel drifted from the desired state" in render(h.tick())
    assert h.ready is first  # the state read after the repair is the one planned against
    kernel.addresses.append(Address("192.0.2.99", "eth0", 24))  # not ours: stays, and counts
    clock.advance(15)
    h.tick()
    assert h.ready is not None and h.ready is not first and len(kernel.prepared) == 2


def test_a_change_since_the_last_read_shows_as_the_kernels_refusal(clock: Clock) -> None:
    h, kernel = _started(clock)
    kernel.services[ServiceKey("tcp", VIPS[3], 0)] = Service(ServiceKey("tcp", VIPS[3], 0))
    out = h.handle(f"1 ACTIVATE {MEMBERS}")
    assert out.response is not None and out.response.kind == "ERROR"
    assert "File exists" in out.response.text
    clock.advance(15)
    h.tick()  # the refresh reads the kernel and repairs what the ACTIVATE could not
    assert kernel.services[ServiceKey("tcp", VIPS[3], 0)].persistence == 15
    assert h.handle("2 ACTIVATE 192.0.2.11").response.kind == "OK"


def test_a_failure_while_standby_drops_the_plan(clock: Clock) -> None:
    h, kernel = _started(clock)
    kernel.addresses.remove(Address(VIPS[5], "lo"))  # a VIP alias removed by hand
    kernel.fail[AddAddress] = "refused"
    clock.advance(15)
    h.tick()  # the refresh's repair fails
    assert h.ready is None
    reads = kernel.reads
    h.handle(f"1 ACTIVATE {MEMBERS}")
    assert kernel.reads == reads + 1  # so the ACTIVATE reads the kernel first
