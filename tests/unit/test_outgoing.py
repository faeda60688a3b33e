"""Planning the steering of replies to outgoing connections: desired state per role, and the
order of the fwmark services and tc filters against the rest of a plan."""

from __future__ import annotations

import attrs
import pytest

from cgp_ipvs_helper.core.protocol import Reply, render
from cgp_ipvs_helper.kernel.testing import FakeKernel
from cgp_ipvs_helper.plan.model import (
    Dest,
    KernelState,
    Role,
    Service,
    ServiceKey,
    Settings,
    TcState,
)
from cgp_ipvs_helper.plan.operations import (
    AddAddress,
    AddClsact,
    AddDest,
    AddFilter,
    DelFilter,
    DelService,
    SetSysctl,
)
from cgp_ipvs_helper.plan.outgoing import PORT_RANGE, MemberMap, local_member, steer
from cgp_ipvs_helper.plan.planner import desired_state, plan
from cgp_ipvs_helper.plan.steering import (
    TC_CHAIN,
    TC_PREF,
    TC_PREF6,
    MemberRange,
    RangeFilter,
    VipFilter,
    vip_blocks,
)

from .conftest import SELF, VIPS, Clock, fresh_state, make_helper

MAP = (
    MemberRange(SELF, 50000, 54999),
    MemberRange("192.0.2.12", 55000, 59999),
    MemberRange("192.0.2.14", 60000, 64999),  # in the map, not in the ACTIVATE list
)
LISTED = (SELF, "192.0.2.12", "192.0.2.13")
MARKS = {m.ip: ServiceKey.for_mark(m.mark) for m in MAP}
FILTERS = {VipFilter("198.51.100.10/31")} | {
    RangeFilter(p, m.first, m.last) for m in MAP for p in ("tcp", "udp")
}


def want(role: Role, members=MAP, local=MAP[0]):
    listed = LISTED if role in (Role.ACTIVE, Role.DRAINING) else ()
    base = desired_state(Settings(), VIPS, role, listed, SELF)
    return steer(base, members, role in (Role.ACTIVE, Role.DRAINING), VIPS, local)


def with_tc(state: KernelState, ingress: str | None = "clsact", filters=()) -> KernelState:
    return attrs.evolve(
        state,
        sysctls={**state.sysctls, PORT_RANGE: "32768\t60999"},
        tc=TcState(ingress, frozenset((f.pref, f.chain, f.handle, f) for f in filters)),
    )


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
    base = desired_state(Settings(), VIPS, Role.ACTIVE, LISTED, SELF)
    state = with_tc(fresh_state())
    never = MemberMap("/etc/sysconfig/cgp-ipvs-members")
    assert never.desired(base, True, VIPS, state) == base and base.filters is None
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
    cleaned = emptied.desired(base, True, VIPS, state)
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
    fw = {s for s in d.services if s.key.fwmark}
    assert fw == {Service(key, "wlc", 0) for key in MARKS.values()}
    assert {dd for dd in d.dests if dd.service.fwmark} == {
        Dest(MARKS[ip], ip, 100) for ip in MARKS
    }  # 192.0.2.14 too: its range is its own whether or not CGP lists it
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
    assert "ipvsadm -A -f 1128776528 -s wlc" in map(str, ops)
    assert "ipvsadm -a -f 1128781528 -r 192.0.2.12 -g -w 100" in map(str, ops)


def test_drain_keeps_owners_at_full_weight() -> None:
    d = want(Role.DRAINING)
    assert d.filters == FILTERS
    assert all(dd.weight == 100 for dd in d.dests if dd.service.fwmark)
    assert any(dd.weight == 0 for dd in d.dests if not dd.service.fwmark)


def test_drain_end_removes_filters_vip_blocks_first_then_the_services() -> None:
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
    } == set(MARKS.values())


def test_leftovers_and_changed_filters_go_foreign_marks_stay() -> None:
    foreign = Service(ServiceKey.for_mark(7), "rr", 0)
    leftover = Service(ServiceKey.for_mark(0x4347EA60), "wlc", 0)  # our base, a range now gone
    state = with_tc(fresh_state(), filters=[RangeFilter("tcp", 60000, 64999)])
    changed = (TC_PREF, TC_CHAIN, RangeFilter("udp", 50000, 54999).handle, None)
    state = attrs.evolve(
        state,
        services=frozenset({foreign, leftover}),
        tc=TcState("ingress", state.tc.filters | {changed}),
    )
    ops = plan(want(Role.STANDBY), state)
    assert DelService(leftover) in ops and DelService(foreign) not in ops
    assert {(op.pref, op.chain, op.handle) for op in ops if isinstance(op, DelFilter)} == {
        changed[:3],
        (TC_PREF, TC_CHAIN, RangeFilter("tcp", 60000, 64999).handle),
    }
    active = plan(want(Role.ACTIVE), state)
    assert AddClsact("eth0") not in active  # an operator's ingress qdisc serves as well
    i = active.index(DelFilter("eth0", *changed[:3]))
    assert active.index(AddFilter("eth0", RangeFilter("udp", 50000, 54999))) > i
    assert AddFilter("eth0", RangeFilter("tcp", 60000, 64999)) not in active


# --- IPv6 VIPs: the same ranges, the same marks, IPv6 services and filters ----------------------

VIPS6 = (*VIPS, "2001:db8:10::", "2001:db8:10::1")
MAP6 = (  # 192.0.2.14 has no IPv6 address: no IPv6 service, no IPv6 mark for its range
    MemberRange(SELF, 50000, 54999, "2001:db8::11"),
    MemberRange("192.0.2.12", 55000, 59999, "2001:db8::12"),
    MAP[2],
)
MARKS6 = {m.ip6: ServiceKey.for_mark(m.mark, ipv6=True) for m in MAP6[:2]}
FILTERS6 = {VipFilter("2001:db8:10::/127", 1)} | {
    RangeFilter(p, m.first, m.last, ipv6=True) for m in MAP6[:2] for p in ("tcp", "udp")
}


def want6(role: Role, members=MAP6, vips=VIPS6):
    balancing = role in (Role.ACTIVE, Role.DRAINING)
    members6 = {m.ip: m.ip6 for m in members if m.ip6}
    listed = LISTED if balancing else ()
    base = desired_state(Settings(), vips, role, listed, SELF, members6=members6)
    return steer(base, members, balancing, vips, members[0])


def test_ipv6_vips_are_steered_by_the_same_ranges_to_the_members_with_ipv6() -> None:
    d = want6(Role.ACTIVE)
    assert d.filters == FILTERS | FILTERS6
    fw = {s.key for s in d.services if s.key.fwmark}
    assert fw == set(MARKS.values()) | set(MARKS6.values())
    assert {dd for dd in d.dests if dd.service in MARKS6.values()} == {
        Dest(key, ip, 100) for ip, key in MARKS6.items()
    }
    ops = plan(d, with_tc(fresh_state(), ingress=None))
    rendered = list(map(str, ops))
    assert "ipvsadm -A -f 1128776528 -6 -s wlc" in rendered
    assert "ipvsadm -a -f 1128781528 -6 -r '[2001:db8::12]:0' -g -w 100" in rendered
    assert not [c for c in rendered if "1128786528 -6" in c]  # 192.0.2.14: IPv4 only
    assert (
        "tc filter add dev eth0 ingress protocol ipv6 pref 65001 chain 0 handle 0x1 flower "
        "skip_hw dst_ip 2001:db8:10::/127 action goto chain 17223"
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
    assert {s.key for s in ipv4_only.services if s.key.fwmark} == set(MARKS.values())
    unbalanced = want6(Role.ACTIVE, members=MAP)  # IPv6 VIPs held on lo only: nothing to steer
    assert unbalanced.filters == FILTERS
    assert {s.key for s in unbalanced.services if s.key.fwmark} == set(MARKS.values())


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
    assert gone == set(MARKS.values()) | set(MARKS6.values())


# --- the helper with a member map ---------------------------------------------------------------

MAP_TEXT = "192.0.2.11 50000-54999\n192.0.2.12 55000-59999\n192.0.2.14 60000-64999\n"


def map_helper(tmp_path, text: str | None = MAP_TEXT, state: KernelState | None = None):
    path = tmp_path / "cgp-ipvs-members"
    if text is not None:
        path.write_text(text)
    kernel = FakeKernel(state or with_tc(fresh_state(), ingress=None))
    return make_helper(kernel, Clock(), member_map=str(path)), kernel, path


def infos(reply: Reply) -> list[str]:
    return [line[2:] for line in render(reply) if line.startswith("* ")]


def test_start_logs_the_map_and_sets_this_members_range(tmp_path) -> None:
    h, kernel, path = map_helper(tmp_path)
    lines = infos(h.start())
    assert f"member map {path}: 3 port ranges; replies to outgoing connections from VIPs are " \
        "steered to their member while this helper balances" in lines  # fmt: skip
    assert "this host is 192.0.2.11 in the member map: ip_local_port_range 50000-54999" in lines
    assert "sysctl -w 'net.ipv4.ip_local_port_range=50000 54999'" in lines
    assert kernel.sysctls[PORT_RANGE] == "50000 54999"
    assert not kernel.filters and not [s for s in kernel.services if s.fwmark]
    out = h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12 192.0.2.13")
    assert render(out)[-1] == "1 OK active vips=2 members=3"
    assert set(kernel.filters.values()) == FILTERS and kernel.ingress == "clsact"
    assert {k for k in kernel.services if k.fwmark} == set(MARKS.values())
    logged = infos(out)
    assert "tc qdisc add dev eth0 clsact" in logged
    assert logged.index("ipvsadm -A -f 1128786528 -s wlc") < logged.index(
        "tc qdisc add dev eth0 clsact"
    )
    kernel.take()
    h.handle("2 ACTIVATE 192.0.2.11 192.0.2.12 192.0.2.13")
    assert {type(op).__name__ for op in kernel.take()} == {"SendGarp"}  # converged: no change


def test_no_map_is_one_line_and_nothing_is_steered(tmp_path) -> None:
    h, kernel, path = map_helper(tmp_path, text=None)
    lines = infos(h.start())
    assert [line for line in lines if "member map" in line] == [
        f"no member map ({path}): outgoing connections from VIPs are not steered"
    ]
    h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    assert not kernel.filters  # (the clsact qdisc holds the takeover's reset guards)
    assert kernel.sysctls[PORT_RANGE] == "32768\t60999"


def test_a_bad_map_blocks_like_a_bad_vip_file_until_sighup(tmp_path) -> None:
    h, kernel, path = map_helper(tmp_path, text="192.0.2.11 50000-54999\n192.0.2.12 54000-59999\n")
    lines = infos(h.start())
    assert kernel.take() == []
    assert any(
        line.startswith(f"ERROR {path}:2: '192.0.2.12 54000-59999': range 54000-59999 overlaps")
        for line in lines
    )
    reply = render(h.handle("1 ACTIVATE 192.0.2.11"))
    assert reply[-1].startswith(f"1 ERROR {path}:2:") and kernel.take() == []
    path.write_text(MAP_TEXT)
    assert infos(h.reload())[0] == (
        f"reloaded /etc/sysconfig/vipaddrs: 2 VIPs; {path}: 3 port ranges"
    )
    assert render(h.handle("2 ACTIVATE 192.0.2.11"))[-1] == "2 OK active vips=2 members=1"
    path.write_text("198.51.100.10 50000-54999\n")  # a VIP as a member: refused, all kept
    assert infos(h.reload()) == [
        f"ERROR {path}:1: '198.51.100.10 50000-54999': 198.51.100.10 is a VIP, not a member's "
        "address; keeping the 2 VIPs in use"
    ]
    assert set(kernel.filters.values()) == FILTERS


def test_an_emptied_map_removes_our_filters_and_services(tmp_path) -> None:
    h, kernel, path = map_helper(tmp_path)
    h.start()
    h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    path.write_text("# nobody\n")
    h.reload()
    assert not kernel.filters and not [k for k in kernel.services if k.fwmark]
    assert kernel.services  # the VIP services stay


MAP6_TEXT = "192.0.2.11 50000-54999 2001:db8::11\n192.0.2.12 55000-59999 2001:db8::12\n" \
    "192.0.2.14 60000-64999\n"  # fmt: skip


def test_the_helper_steers_ipv6_vips_converges_and_says_once_who_has_no_ipv6(tmp_path) -> None:
    path = tmp_path / "cgp-ipvs-members"
    path.write_text(MAP6_TEXT)
    kernel = FakeKernel(with_tc(fresh_state(), ingress=None))
    h = make_helper(kernel, Clock(), vips=VIPS6, member_map=str(path))
    h.start()
    out = h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    assert render(out)[-1] == "1 OK active vips=4 members=2"
    assert set(kernel.filters.values()) == FILTERS | FILTERS6
    assert {k for k in kernel.services if k.fwmark} == set(MARKS.values()) | set(MARKS6.values())
    # 192.0.2.14 is not in the ACTIVATE list, but its range is steered: said for it
    said = [line for line in infos(out) if "no IPv6 address" in line]
    assert said == [f"member 192.0.2.14 has no IPv6 address in {path}: left out of the IPv6 "
                    "services"]  # fmt: skip
    kernel.take()
    again = h.handle("2 ACTIVATE 192.0.2.11 192.0.2.12")
    assert {type(op).__name__ for op in kernel.take()} == {"SendGarp", "SendNa"}
    assert not [line for line in infos(again) if "no IPv6 address" in line]
