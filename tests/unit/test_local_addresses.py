"""The host's own addresses are never taken away, whatever the VIP file says (issue 10, item 1)."""

from __future__ import annotations

import pytest

from cgp_ipvs_helper.hostaddrs import local_clashes
from cgp_ipvs_helper.model import Address, KernelState, Settings
from cgp_ipvs_helper.operations import DelAddress
from cgp_ipvs_helper.planner import Role, desired_state, plan

LAN = Address("192.0.2.10", "eth0", 24)
LOOPBACK = Address("127.0.0.1", "lo", 8)
VIPS = ("198.51.100.10", "192.0.2.10", "203.0.113.5")


def state(*addresses: Address) -> KernelState:
    return KernelState(addresses=(LOOPBACK, LAN, *addresses))


@pytest.mark.parametrize("role", [Role.STANDBY, Role.ACTIVE, Role.DRAINING, Role.STOPPED])
@pytest.mark.parametrize("retired", [frozenset(), frozenset({"203.0.113.0", "192.0.2.10"})])
def test_only_32s_of_our_vips_are_ever_deleted(role: Role, retired: frozenset[str]) -> None:
    foreign = (
        Address("203.0.113.0", "lo", 24),  # a range someone put on lo
        Address("203.0.113.5", "eth0", 24),  # a second LAN subnet on -i
        Address("198.51.100.10", "eth1", 32),  # another interface: never ours
    )
    vips = () if retired else VIPS
    desired = desired_state(Settings(), vips, role, ("192.0.2.12",), "192.0.2.12", retired)
    deleted = [op.address for op in plan(desired, state(*foreign)) if isinstance(op, DelAddress)]
    assert deleted == []
    ours = (Address("198.51.100.10", "eth0", 32), Address("198.51.100.10", "lo", 32))
    desired = desired_state(Settings(), (), Role.STANDBY, (), None, frozenset({"198.51.100.10"}))
    deleted = [
        op.address for op in plan(desired, state(*foreign, *ours)) if isinstance(op, DelAddress)
    ]
    assert deleted == list(ours)


def test_a_vip_held_by_this_host_is_a_clash_unless_it_is_ours() -> None:
    held = state(
        Address("198.51.100.10", "eth0", 32),  # ours (or a dead run's) on -i
        Address("203.0.113.5", "lo", 32),  # on lo: every member holds it there
        Address("203.0.113.5", "eth1", 32),  # another interface
    )
    assert local_clashes(VIPS, held, "eth0") == [LAN, Address("203.0.113.5", "eth1", 32)]
    assert local_clashes(VIPS, held, "eth1") == [LAN, Address("198.51.100.10", "eth0", 32)]
    assert local_clashes(("198.51.100.10",), state(), "eth0") == []


def test_ipv6_vips_are_128s() -> None:
    vip6 = "2001:db8:10::5"
    ours = Address(vip6, "lo", 128)
    desired = desired_state(Settings(), (), Role.STANDBY, (), None, frozenset({vip6}))
    assert [op.address for op in plan(desired, state(ours)) if isinstance(op, DelAddress)] == [ours]
    lan6 = Address(vip6, "eth0", 64)
    assert plan(desired, state(lan6)) == plan(desired, state())
    assert local_clashes([vip6], state(lan6, Address(vip6, "eth0", 128)), "eth0") == [lan6]
