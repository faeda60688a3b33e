"""Planning the steering of replies to outgoing connections: desired state per role (filters
sending each range to its owner's MAC, this host's own range through its firewall-mark service),
and the order of the service and the tc filters against the rest of a plan."""

from __future__ import annotations

import attrs
import pytest

from cgp_ipvs_helper.plan.model import Dest, Role, Service, ServiceKey, Settings
from cgp_ipvs_helper.plan.operations import AddAddress, AddDest, DelService, SetSysctl
from cgp_ipvs_helper.plan.outgoing import PORT_RANGE, MemberMap, local_member
from cgp_ipvs_helper.plan.planner import desired, plan
from cgp_ipvs_helper.plan.steering import (
    TC_CHAIN,
    TC_PREF,
    TC_PREF6,
    RangeFilter,
    VipFilter,
    vip_blocks,
)
from cgp_ipvs_helper.plan.tcops import AddClsact, AddFilter, DelFilter

from .conftest import SELF, VIPS, fresh_state
from .mapcases import (
    FILTERS,
    FILTERS6,
    LISTED,
    MACS,
    MACS6,
    MAP,
    MAP6,
    OWN,
    OWN6,
    OWN_MAC,
    VIPS6,
    lan,
    with_tc,
)


def want(role: Role, members=MAP, tc=None, vips=VIPS):
    """The desired state of `role` with the map `members`, this host (SELF) in it first."""
    listed = LISTED if role in (Role.ACTIVE, Role.DRAINING) else ()
    member_map = MemberMap("members", members, True)
    actual = attrs.evolve(fresh_state(), tc=tc or lan())
    return desired(Settings(), vips, role, listed, SELF, frozenset(), member_map, actual)


def test_vip_blocks_are_the_fewest_cidrs_per_family_ipv6_ones_numbered_in_order() -> None:
    vips = ["198.51.100.10", "198.51.100.11", "198.51.100.12", "2001:db8:20::10"]
    vips += [f"203.0.113.{i}" for i in range(256)] + [f"2001:db8:10::{i:x}" for i in range(16)]
    assert vip_blocks(vips) == {
        VipFilter("198.51.100.10/31"),
        VipFilter("198.51.100.12/32"),
        VipFilter("203.0.113.0/24"),
        VipFilter("2001:db8:10::/124", 1),  # the same low 32 bits as the next one: numbered
        VipFilter("2001:db8:20::10/128", 2),
    }
    block = VipFilter("203.0.113.0/24")
    assert (block.handle, block.pref) == (0xCB007100, 65000)
    assert VipFilter("2001:db8:10::/124", 1).pref == 65001
    with pytest.raises(ValueError, match="not a tc handle"):
        VipFilter("2001:db8:10::/124")  # 128 bits: an IPv6 block's handle is given


def test_the_local_entry_is_the_one_this_host_holds() -> None:
    assert local_member(MAP, {"127.0.0.1", "192.0.2.12"}) == MAP[1]
    assert local_member(MAP, {"192.0.2.99"}) is None


def test_no_map_leaves_tc_alone_and_adds_nothing_an_emptied_one_cleans_up() -> None:
    base = desired(Settings(), VIPS, Role.ACTIVE, LISTED, SELF)
    state = with_tc(fresh_state())
    never = MemberMap("/etc/sysconfig/cgp-ipvs-members")
    args = (Settings(), VIPS, Role.ACTIVE, LISTED, SELF, frozenset())
    assert desired(*args, never, state) == base and base.filters is None
    assert never.paths() == frozenset() and never.tc_dev("eth0") is None
    assert never.notes({SELF}) == [
        "no member map (/etc/sysconfig/cgp-ipvs-members): outgoing connections from VIPs are "
        "not steered"
    ]
    emptied = MemberMap("m")
    emptied.update(MAP)
    assert emptied.notes({SELF})[1].endswith(
        f"{SELF} in the member map: ip_local_port_range 50000-54999"
    )
    assert emptied.notes({"192.0.2.99"})[1].startswith(
        "no address of this host is in the member map"
    )
    emptied.update(())
    assert emptied.seen and emptied.paths() == {PORT_RANGE} and emptied.tc_dev("eth0") == "eth0"
    cleaned = desired(*args, emptied, state)
    assert cleaned.filters == frozenset() and cleaned.services == base.services


def test_standby_sets_only_its_port_range_and_wants_no_filters() -> None:
    d = want(Role.STANDBY)
    assert d.filters == frozenset()
    assert not any(s.key.fwmark for s in d.services)
    port_range = d.sysctls[-1]
    assert (port_range.path, port_range.value) == (PORT_RANGE, "50000 54999")
    ops = plan(d, with_tc(fresh_state()))
    assert SetSysctl(port_range) in ops
    assert str(SetSysctl(port_range)) == "sysctl -w 'net.ipv4.ip_local_port_range=50000 54999'"
    assert not [op for op in ops if isinstance(op, (AddFilter, DelFilter, AddClsact))]


def test_kernel_spelling_of_the_range_is_no_change() -> None:
    state = with_tc(fresh_state())
    state = attrs.evolve(state, sysctls={**state.sysctls, PORT_RANGE: "50000\t54999"})
    assert not [op for op in plan(want(Role.STANDBY), state) if isinstance(op, SetSysctl)
                and op.sysctl.path == PORT_RANGE]  # fmt: skip


def test_active_steers_every_map_member_in_order() -> None:
    d = want(Role.ACTIVE)
    assert d.filters == FILTERS
    assert {s for s in d.services if s.key.fwmark} == {Service(OWN, "wlc", 0)}
    assert {dd for dd in d.dests if dd.service.fwmark} == {Dest(OWN, SELF, 100)}
    ops = plan(d, with_tc(fresh_state(), ingress=None))
    kinds = [type(op) for op in ops]
    last_dest = max(i for i, k in enumerate(kinds) if k is AddDest)
    first_filter = kinds.index(AddClsact)
    assert last_dest < first_filter < kinds.index(AddFilter)
    vip_on_eth0 = min(i for i, op in enumerate(ops) if isinstance(op, AddAddress)
                      and op.address.dev == "eth0")  # fmt: skip
    filters = [op.filter for op in ops if isinstance(op, AddFilter)]
    assert set(filters) == FILTERS and isinstance(filters[-1], VipFilter)
    assert max(i for i, k in enumerate(kinds) if k is AddFilter) < vip_on_eth0
    rendered = list(map(str, ops))
    assert "ipvsadm -A -f 1128776528 -s wlc" in rendered
    assert "ipvsadm -a -f 1128776528 -r 192.0.2.11 -g -w 100" in rendered
    # 192.0.2.14 too: its range is its own whether or not CGP lists it
    assert (
        "tc filter add dev eth0 ingress protocol ip pref 65000 chain 17223 handle 0x6ea60 flower "
        "skip_hw ip_proto tcp dst_port 60000-64999 action skbmod set dmac 02:00:00:00:00:14 "
        "set smac 02:00:00:00:00:11 action mirred egress redirect dev eth0"
    ) in rendered
    assert (
        "tc filter add dev eth0 ingress protocol ip pref 65000 chain 17223 handle 0x11c350 "
        "flower skip_hw ip_proto udp dst_port 50000-54999 action skbedit mark 0x4347c350"
    ) in rendered


def test_a_range_whose_owner_or_own_mac_is_unknown_is_dropped_until_known() -> None:
    unknown = want(Role.ACTIVE, tc=lan(macs={"192.0.2.12": MACS["192.0.2.12"]}))
    dropped = {f for f in unknown.filters if isinstance(f, RangeFilter) and f.dmac is None}
    assert {(f.first, f.local) for f in dropped} == {(60000, False), (50000, True)}
    no_own_mac = want(Role.ACTIVE, tc=lan(mac=None))
    assert {f.dmac for f in no_own_mac.filters if isinstance(f, RangeFilter)} == {None}
    # once learned, the drop filters are replaced in one plan
    state = with_tc(fresh_state(), filters=unknown.filters)
    state = attrs.evolve(state, services=unknown.services, dests=unknown.dests)
    ops = [op for op in plan(want(Role.ACTIVE), state) if isinstance(op, (AddFilter, DelFilter))]
    assert [type(op) for op in ops] == [DelFilter, DelFilter, AddFilter, AddFilter]
    assert {op.filter.dmac for op in ops if isinstance(op, AddFilter)} == {MACS["192.0.2.14"]}


def test_a_changed_mac_replaces_the_owners_filters_only() -> None:
    d = want(Role.ACTIVE)
    state = with_tc(
        fresh_state(), filters=d.filters, macs={**MACS, "192.0.2.12": "02:00:00:00:01:12"}
    )
    state = attrs.evolve(state, services=d.services, dests=d.dests)
    moved = want(Role.ACTIVE, tc=state.tc)
    ops = plan(moved, state)
    assert {str(op) for op in ops if isinstance(op, DelFilter)} == {
        "tc filter del dev eth0 ingress protocol ip pref 65000 chain 17223 handle 0x6d6d8 flower",
        "tc filter del dev eth0 ingress protocol ip pref 65000 chain 17223 handle 0x11d6d8 flower",
    }
    assert {op.filter.dmac for op in ops if isinstance(op, AddFilter)} == {"02:00:00:00:01:12"}


def test_drain_keeps_the_filters_and_this_hosts_range_at_full_weight() -> None:
    d = want(Role.DRAINING)
    assert d.filters == FILTERS
    assert all(dd.weight == 100 for dd in d.dests if dd.service.fwmark)
    assert any(dd.weight == 0 for dd in d.dests if not dd.service.fwmark)


def test_drain_end_removes_filters_vip_blocks_first_then_the_service() -> None:
    draining = want(Role.DRAINING)
    state = with_tc(fresh_state(), filters=FILTERS)
    state = attrs.evolve(state, services=draining.services, dests=draining.dests)
    ops = plan(want(Role.STANDBY), state)
    dels = [op for op in ops if isinstance(op, DelFilter)]
    assert len(dels) == len(FILTERS) and dels[0].chain == 0
    assert all(d.chain == TC_CHAIN for d in dels[1:])
    kinds = [type(op) for op in ops]
    assert max(i for i, k in enumerate(kinds) if k is DelFilter) < kinds.index(DelService)
    assert {
        op.service.key for op in ops if isinstance(op, DelService) and op.service.key.fwmark
    } == {OWN}


def test_leftovers_and_changed_filters_go_foreign_marks_stay() -> None:
    foreign = Service(ServiceKey.for_mark(7), "rr", 0)
    # a dead run's: a service for another member's range (what the marks did before)
    leftover = Service(ServiceKey.for_mark(0x4347D6D8), "wlc", 0)
    left = RangeFilter("tcp", 60000, 64999, False, "02:00:00:00:00:99", OWN_MAC)
    state = with_tc(fresh_state(), filters=[left])
    changed = (TC_PREF, TC_CHAIN, RangeFilter("udp", 50000, 54999).handle, None)
    state = attrs.evolve(
        state,
        services=frozenset({foreign, leftover}),
        tc=attrs.evolve(state.tc, ingress="ingress", filters=state.tc.filters | {changed}),
    )
    ops = plan(want(Role.STANDBY), state)
    assert DelService(leftover) in ops and DelService(foreign) not in ops
    assert {(op.pref, op.chain, op.handle) for op in ops if isinstance(op, DelFilter)} == {
        changed[:3],
        (TC_PREF, TC_CHAIN, left.handle),
    }
    active = plan(want(Role.ACTIVE), state)
    assert AddClsact("eth0") not in active  # an operator's ingress qdisc serves as well
    assert DelService(leftover) in active
    i = active.index(DelFilter("eth0", *changed[:3]))
    assert active.index(AddFilter("eth0", RangeFilter("udp", 50000, 54999, local=True))) > i
    right = attrs.evolve(left, dmac=MACS["192.0.2.14"])
    gone = DelFilter("eth0", left.pref, left.chain, left.handle)
    assert active.index(AddFilter("eth0", right)) > active.index(gone)


# --- IPv6 VIPs: the same ranges, by the members' IPv6 neighbours --------------------------------


def want6(role: Role, members=MAP6, vips=VIPS6):
    return want(role, members, lan(MACS6), vips)


def test_ipv6_vips_are_steered_by_the_same_ranges_to_the_members_ipv6_neighbours() -> None:
    d = want6(Role.ACTIVE)
    assert d.filters == FILTERS | FILTERS6
    assert {s.key for s in d.services if s.key.fwmark} == {OWN, OWN6}
    assert {dd for dd in d.dests if dd.service == OWN6} == {Dest(OWN6, "2001:db8::11", 100)}
    ops = plan(d, with_tc(fresh_state(), ingress=None))
    rendered = list(map(str, ops))
    assert "ipvsadm -A -f 1128776528 -6 -s wlc" in rendered
    assert "ipvsadm -a -f 1128776528 -6 -r '[2001:db8::11]:0' -g -w 100" in rendered
    assert not [c for c in rendered if "60000-64999" in c and "ipv6" in c]  # 192.0.2.14: IPv4
    assert (
        "tc filter add dev eth0 ingress protocol ipv6 pref 65001 chain 0 handle 0x1 flower "
        "skip_hw dst_ip 2001:db8:10::/127 action goto chain 17223"
    ) in rendered
    assert (
        "tc filter add dev eth0 ingress protocol ipv6 pref 65001 chain 17223 handle 0x11d6d8 "
        "flower skip_hw ip_proto udp dst_port 55000-59999 action skbmod set dmac "
        "02:00:00:00:00:12 set smac 02:00:00:00:00:11 action mirred egress redirect dev eth0"
    ) in rendered
    kinds = [type(op) for op in ops]
    filters = [op.filter for op in ops if isinstance(op, AddFilter)]
    # range filters, then the VIP blocks jumping to them; after every real server, before the
    # first VIP goes on eth0
    assert [f.chain for f in filters] == [TC_CHAIN] * 10 + [0, 0]
    assert max(i for i, k in enumerate(kinds) if k is AddDest) < kinds.index(AddClsact)
    on_eth0 = min(i for i, op in enumerate(ops) if isinstance(op, AddAddress)
                  and op.address.dev == "eth0")  # fmt: skip
    assert max(i for i, k in enumerate(kinds) if k is AddFilter) < on_eth0


def test_no_ipv6_steering_without_ipv6_vips_or_without_a_member_with_ipv6() -> None:
    ipv4_only = want6(Role.ACTIVE, vips=VIPS)  # a map with IPv6 addresses, IPv4 VIPs
    assert ipv4_only.filters == FILTERS
    assert {s.key for s in ipv4_only.services if s.key.fwmark} == {OWN}
    unbalanced = want6(Role.ACTIVE, members=MAP)  # IPv6 VIPs held on lo only: nothing to steer
    assert unbalanced.filters == FILTERS
    assert {s.key for s in unbalanced.services if s.key.fwmark} == {OWN}


def test_drain_end_removes_the_ipv6_filters_too_blocks_first() -> None:
    draining = want6(Role.DRAINING)
    assert all(dd.weight == 100 for dd in draining.dests if dd.service.fwmark)
    state = with_tc(fresh_state(), filters=FILTERS | FILTERS6)
    state = attrs.evolve(state, services=draining.services, dests=draining.dests)
    ops = plan(want6(Role.STANDBY), state)
    dels = [op for op in ops if isinstance(op, DelFilter)]
    assert len(dels) == len(FILTERS | FILTERS6)
    assert [d.chain for d in dels[:2]] == [0, 0] and {d.chain for d in dels[2:]} == {TC_CHAIN}
    assert DelFilter("eth0", TC_PREF6, 0, 1) in dels
    assert str(dels[1]) == (
        "tc filter del dev eth0 ingress protocol ipv6 pref 65001 chain 0 handle 0x1 flower"
    )
    kinds = [type(op) for op in ops]
    assert max(i for i, k in enumerate(kinds) if k is DelFilter) < kinds.index(DelService)
    gone = {op.service.key for op in ops if isinstance(op, DelService) and op.service.key.fwmark}
    assert gone == {OWN, OWN6}
