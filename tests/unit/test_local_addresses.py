"""The host's own addresses are never taken away, whatever the VIP file says."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cgp_ipvs_helper.core import hostaddrs
from cgp_ipvs_helper.core.hostaddrs import local_clashes, subnet_edges
from cgp_ipvs_helper.plan.model import Address, KernelState, Settings
from cgp_ipvs_helper.plan.operations import DelAddress
from cgp_ipvs_helper.plan.planner import Role, desired, plan

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
    want = desired(Settings(), vips, role, ("192.0.2.12",), "192.0.2.12", retired)
    deleted = [op.address for op in plan(want, state(*foreign)) if isinstance(op, DelAddress)]
    assert deleted == []
    ours = (Address("198.51.100.10", "eth0", 32), Address("198.51.100.10", "lo", 32))
    want = desired(Settings(), (), Role.STANDBY, (), None, frozenset({"198.51.100.10"}))
    deleted = [
        op.address for op in plan(want, state(*foreign, *ours)) if isinstance(op, DelAddress)
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
    want = desired(Settings(), (), Role.STANDBY, (), None, frozenset({vip6}))
    assert [op.address for op in plan(want, state(ours)) if isinstance(op, DelAddress)] == [ours]
    lan6 = Address(vip6, "eth0", 64)
    assert plan(want, state(lan6)) == plan(want, state())
    assert local_clashes([vip6], state(lan6, Address(vip6, "eth0", 128)), "eth0") == [lan6]


def _edge_by_ipaddress(ip: str, on_iface: tuple[Address, ...]) -> str | None:
    """What the member check said when it used ipaddress's network objects."""
    for a in on_iface:
        if a.prefixlen <= 30 and ":" not in a.ip:
            net = ipaddress.IPv4Network(f"{a.ip}/{a.prefixlen}", strict=False)
            if ip == str(net.broadcast_address):
                return f"broadcast address of {a.dev}'s subnet {net}"
            if ip == str(net.network_address):
                return f"network address of {a.dev}'s subnet {net}"
    return None


_IPV4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))


@given(
    st.lists(st.tuples(_IPV4, st.integers(0, 32)), max_size=3),
    st.one_of(_IPV4, st.just("2001:db8::1")),
    st.data(),
)
def test_subnet_edges_are_what_ipaddress_says(nets, member, data) -> None:
    on_iface = tuple(Address(ip, "eth0", prefix) for ip, prefix in nets)
    if nets and data.draw(st.booleans()):  # often an edge of one of them
        net = ipaddress.IPv4Network(data.draw(st.sampled_from(nets)), strict=False)
        member = str(data.draw(st.sampled_from([net.network_address, net.broadcast_address])))
    assert subnet_edges(on_iface).get(member) == _edge_by_ipaddress(member, on_iface)


def test_an_interface_is_looked_up_by_its_exact_name() -> None:
    assert hostaddrs.interface_exists("lo")  # every network namespace has it
    assert not hostaddrs.interface_exists("nosuch0")
    for bad in ("", "lo\0", "x" * 16, "lo" + " " * 14):  # never truncated to another name
        assert not hostaddrs.interface_exists(bad)
