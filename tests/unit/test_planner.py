"""The planner: desired state per role, and only the difference against the kernel."""

from __future__ import annotations

from collections import Counter

import attrs
import netaddr

from cgp_ipvs_helper.kernel.testing import FakeKernel
from cgp_ipvs_helper.plan import model
from cgp_ipvs_helper.plan.guard import GUARD_PREF, Guard
from cgp_ipvs_helper.plan.operations import (
    AddAddress,
    AddDest,
    AddService,
    DelAddress,
    DelService,
    EditDest,
    EditService,
    SendNa,
    SetSysctl,
    StartDaemon,
    StopDaemon,
)
from cgp_ipvs_helper.plan.outgoing import MemberMap
from cgp_ipvs_helper.plan.planner import (
    BACKUP_ONLY,
    DEFAULT_PORTS,
    Role,
    announce,
    desired,
    plan,
)
from cgp_ipvs_helper.plan.steering import MemberRange
from cgp_ipvs_helper.plan.tcops import AddClsact, AddGuard, DelGuard

from .conftest import SELF, fresh_state

VIPS = ("198.51.100.10", "198.51.100.11")
MEMBERS = (SELF, "192.0.2.12", "192.0.2.13")
BACKUP_ONLY_ON = model.Sysctl(BACKUP_ONLY, "1")


def want(
    role: Role, settings: model.Settings | None = None, vips=VIPS, members=MEMBERS, retired=()
):
    settings = settings or model.Settings()
    return desired(
        settings, vips, role, members if role is not Role.STANDBY else (), SELF, frozenset(retired)
    )


def apply(state: model.KernelState, ops) -> model.KernelState:
    k = FakeKernel(state)
    for op in ops:
        k.apply(op)
    return k.observe(frozenset(state.sysctls))


def count(ops) -> Counter:
    return Counter(type(op).__name__ for op in ops)


def test_standby_from_a_fresh_kernel() -> None:
    ops = plan(want(Role.STANDBY), fresh_state())
    assert count(ops) == {"AddAddress": 2, "SetSysctl": 6, "StartDaemon": 1}
    assert all(op.address.dev == "lo" for op in ops if isinstance(op, AddAddress))
    # backup_only is raised once the backup daemon it blocks runs (a fresh kernel has 0)
    assert ops[-2:] == (StartDaemon(model.Daemon("backup", "eth0", 0)), SetSysctl(BACKUP_ONLY_ON))


def test_taking_over_keeps_the_backup_forwarding_and_guards_against_resets() -> None:
    def apply_read(state: model.KernelState, ops) -> model.KernelState:
        k = FakeKernel(state)
        for op in ops:
            k.apply(op)
        return k.observe(frozenset(state.sysctls), guard_dev="eth0")

    fresh = model.KernelState(
        addresses=fresh_state().addresses, sysctls=fresh_state().sysctls, guard=model.GuardState()
    )
    standby = apply_read(fresh, plan(want(Role.STANDBY), fresh))
    ops = plan(want(Role.TAKING_OVER), standby)
    assert ops[0] == SetSysctl(model.Sysctl(BACKUP_ONLY, "0"))  # first: the backup daemon stays
    assert StopDaemon(model.Daemon("backup", "eth0", 0)) not in ops
    guard = Guard("198.51.100.10/31", int(netaddr.IPAddress("198.51.100.10")))
    assert ops[-5:] == (
        StartDaemon(model.Daemon("master", "eth0", 0)),
        AddClsact("eth0"),
        AddGuard("eth0", guard),
        AddAddress(model.Address("198.51.100.10", "eth0")),
        AddAddress(model.Address("198.51.100.11", "eth0")),
    )
    taking_over = apply_read(standby, ops)
    assert plan(want(Role.TAKING_OVER), taking_over) == ()
    # over: the backup stops before backup_only blocks forwarding; the guard goes
    assert plan(want(Role.ACTIVE), taking_over) == (
        StopDaemon(model.Daemon("backup", "eth0", 0)),
        SetSysctl(BACKUP_ONLY_ON),
        DelGuard("eth0", GUARD_PREF, guard.handle),
    )
    # a guard someone changed is replaced
    changed = attrs.evolve(
        taking_over, guard=model.GuardState("clsact", frozenset({(GUARD_PREF, guard.handle, None)}))
    )
    assert plan(want(Role.TAKING_OVER), changed) == (
        DelGuard("eth0", GUARD_PREF, guard.handle),
        AddGuard("eth0", guard),
    )
    # no egress hook where an ingress qdisc is in the way: the takeover goes on unguarded
    ingress = attrs.evolve(standby, guard=model.GuardState("ingress"))
    assert not [op for op in plan(want(Role.TAKING_OVER), ingress) if isinstance(op, AddGuard)]


def test_activation_from_standby() -> None:
    standby = apply(fresh_state(), plan(want(Role.STANDBY), fresh_state()))
    ops = plan(want(Role.ACTIVE), standby)
    assert count(ops) == {
        "AddService": 4,
        "AddDest": 12,
        "StopDaemon": 1,
        "StartDaemon": 1,
        "AddAddress": 2,
    }
    assert [type(op) for op in ops[-4:]] == [StopDaemon, StartDaemon, AddAddress, AddAddress]
    assert plan(want(Role.ACTIVE), apply(standby, ops)) == ()


def test_member_change_and_weight_change() -> None:
    active = apply(fresh_state(), plan(want(Role.ACTIVE), fresh_state()))
    ops = plan(want(Role.ACTIVE, model.Settings(weight=50), members=(SELF, "192.0.2.12")), active)
    assert count(ops) == {"DelDest": 4, "EditDest": 4}
    assert {op.dest.weight for op in ops if isinstance(op, EditDest)} == {50}


def test_draining_drops_vips_from_lan_first_and_serves_new_connections_itself() -> None:
    active = apply(fresh_state(), plan(want(Role.ACTIVE, model.Settings(weight=0)), fresh_state()))
    ops = plan(want(Role.DRAINING, model.Settings(weight=0)), active)
    assert count(ops) == {"DelAddress": 2, "EditDest": 12}
    assert [type(op) for op in ops[:2]] == [DelAddress, DelAddress]
    assert all(op.address.dev == "eth0" for op in ops[:2])
    weights = {(op.dest.ip, op.dest.weight) for op in ops if isinstance(op, EditDest)}
    assert weights == {(SELF, 100), ("192.0.2.12", 0), ("192.0.2.13", 0)}
    drained = apply(active, ops)
    ops = plan(want(Role.STANDBY), drained)
    assert count(ops) == {"StopDaemon": 1, "StartDaemon": 1, "DelService": 4}


def test_stopped_keeps_lo_aliases_and_sysctls() -> None:
    standby = apply(fresh_state(), plan(want(Role.STANDBY), fresh_state()))
    assert plan(want(Role.STOPPED), standby) == (StopDaemon(model.Daemon("backup", "eth0", 0)),)


def test_no_persistence_uses_the_port_set() -> None:
    ops = plan(want(Role.ACTIVE, model.Settings(persistence=0)), fresh_state())
    services = [op.service for op in ops if isinstance(op, AddService)]
    assert len(services) == len(VIPS) * len(DEFAULT_PORTS)
    assert {(s.key.proto, s.key.port) for s in services} == set(DEFAULT_PORTS)
    assert all(s.persistence == 0 and s.key.port for s in services)
    ports = model.Settings(persistence=0, ports=(("tcp", 25), ("udp", 5060)))
    assert count(plan(want(Role.ACTIVE, ports), fresh_state()))["AddService"] == 4


def test_switching_persistence_off_replaces_port_zero_services() -> None:
    active = apply(fresh_state(), plan(want(Role.ACTIVE), fresh_state()))
    ops = plan(want(Role.ACTIVE, model.Settings(persistence=0, ports=(("tcp", 25),))), active)
    assert count(ops) == {"AddService": 2, "AddDest": 6, "DelService": 4}
    assert ops.index(next(o for o in ops if isinstance(o, DelService))) > ops.index(
        next(o for o in ops if isinstance(o, AddService))
    )


def test_persistence_change_edits_in_place() -> None:
    active = apply(fresh_state(), plan(want(Role.ACTIVE), fresh_state()))
    ops = plan(want(Role.ACTIVE, model.Settings(persistence=60)), active)
    assert count(ops) == {"EditService": 4}
    assert {op.service.persistence for op in ops if isinstance(op, EditService)} == {60}


def test_weight_zero_keeps_self_as_quiesced_real_server() -> None:
    ops = plan(want(Role.ACTIVE, model.Settings(weight=0)), fresh_state())
    weights = {op.dest.ip: op.dest.weight for op in ops if isinstance(op, AddDest)}
    assert weights == {SELF: 0, "192.0.2.12": 100, "192.0.2.13": 100}


def test_a_slash_24() -> None:
    vips = tuple(f"203.0.113.{i}" for i in range(256))
    ops = plan(want(Role.ACTIVE, vips=vips, members=MEMBERS[:2]), fresh_state())
    c = count(ops)
    assert (c["AddService"], c["AddDest"], c["AddAddress"]) == (512, 1024, 512)
    lan = [op.address.ip for op in ops if isinstance(op, AddAddress) and op.address.dev == "eth0"]
    assert lan == list(vips)  # numeric order, not string order


def test_drift_is_repaired_and_nothing_foreign_is_touched() -> None:
    foreign_svc = model.Service(model.ServiceKey("tcp", "203.0.113.80", 80), "rr", 0)
    foreign_dest = model.Dest(foreign_svc.key, "203.0.113.81", 1, "nat")
    active = apply(fresh_state(), plan(want(Role.ACTIVE), fresh_state()))
    svc = next(iter(sorted(active.services, key=str)))
    drifted = model.KernelState(
        addresses=tuple(a for a in active.addresses if (a.ip, a.dev) != (VIPS[0], "eth0"))
        + (model.Address("203.0.113.9", "eth0"), model.Address("203.0.113.10", "lo")),
        sysctls={**active.sysctls, "net/ipv4/conf/all/arp_announce": "0"},
        services=(active.services - {svc}) | {foreign_svc, model.Service(svc.key, "rr", 15)},
        dests=(active.dests - {d for d in active.dests if d.ip == "192.0.2.13"}) | {foreign_dest},
        daemons=active.daemons | {model.Daemon("backup", "eth1", 9)},
    )
    ops = plan(want(Role.ACTIVE), drifted)
    assert count(ops) == {"SetSysctl": 1, "EditService": 1, "AddDest": 4, "AddAddress": 1}
    assert ops[0] == SetSysctl(
        next(s for s in want(Role.ACTIVE).sysctls if s.path == "net/ipv4/conf/all/arp_announce")
    )
    assert all("203.0.113" not in str(op) for op in ops)


def test_sysctls_the_kernel_lacks_are_skipped() -> None:
    state = fresh_state()
    state = model.KernelState(
        addresses=state.addresses, sysctls={**state.sysctls, "net/ipv4/vs/backup_only": None}
    )
    ops = plan(want(Role.STANDBY), state)
    assert "backup_only" not in " ".join(map(str, ops))


def test_retired_vips_are_cleaned_from_lo_and_lan() -> None:
    active = apply(fresh_state(), plan(want(Role.ACTIVE), fresh_state()))
    ops = plan(want(Role.ACTIVE, vips=VIPS[1:], retired=VIPS[:1]), active)
    assert count(ops) == {"DelService": 2, "DelAddress": 2}
    assert {op.address.dev for op in ops if isinstance(op, DelAddress)} == {"eth0", "lo"}


def test_announce_sends_both_forms_per_vip() -> None:
    garps = announce(("198.51.100.11", "198.51.100.9"), "eth0")
    assert [(g.ip, g.reply) for g in garps] == [
        ("198.51.100.9", False),
        ("198.51.100.9", True),
        ("198.51.100.11", False),
        ("198.51.100.11", True),
    ]


def test_without_a_members_ipv6_address_ipv6_vips_are_held_on_lo_only() -> None:
    vips = (*VIPS, "2001:db8:10::", "2001:db8:10::1")
    standby = apply(fresh_state(), plan(want(Role.STANDBY, vips=vips), fresh_state()))
    assert [a for a in standby.addresses_on("lo") if ":" in a.ip] == [
        model.Address("2001:db8:10::", "lo", 128),
        model.Address("2001:db8:10::1", "lo", 128),
    ]
    ops = plan(want(Role.ACTIVE, vips=vips), standby)
    assert plan(want(Role.ACTIVE), standby) == ops  # exactly what the IPv4 VIPs alone need
    assert [op.ip for op in announce(vips, "eth0")] == [v for v in VIPS for _ in (0, 1)]
    active = apply(standby, ops)
    assert plan(want(Role.STANDBY, vips=vips), active) == plan(want(Role.STANDBY), active)


V6 = ("2001:db8:10::", "2001:db8:10::1")
MEMBERS6 = {SELF: "2001:db8::11", "192.0.2.12": "2001:db8::12"}  # .13 has none
RANGES = MemberMap(  # the member map that gives those addresses
    "members", tuple(MemberRange(m, 40000 + i * 1000, 40999 + i * 1000, MEMBERS6.get(m))
                     for i, m in enumerate(MEMBERS)), True
)  # fmt: skip


def test_ipv6_vips_are_balanced_over_the_members_ipv6_addresses() -> None:
    vips = (*VIPS, *V6)
    settings = model.Settings(weight=50)
    standby = apply(fresh_state(), plan(want(Role.STANDBY, vips=vips), fresh_state()))
    active = desired(settings, vips, Role.ACTIVE, MEMBERS, SELF, frozenset(), RANGES)
    assert active.on_iface == frozenset(vips)
    v6 = {s for s in active.services if ":" in s.key.vip}
    assert v6 == {
        model.Service(model.ServiceKey(p, v, 0), "wlc", 15) for v in V6 for p in ("tcp", "udp")
    }
    assert {(d.service.vip, d.ip, d.weight) for d in active.dests if ":" in d.ip} == {
        (v, ip, 50 if ip == "2001:db8::11" else 100)
        for v in V6
        for _ in (0, 1)
        for ip in MEMBERS6.values()
    }
    assert not [d for d in active.dests if ":" in d.service.vip and ":" not in d.ip]
    ops = plan(active, standby)
    # the IPv4 order holds: forwarding ready (services, real servers, daemons) before any VIP
    # is taken on eth0
    first_iface = min(
        i for i, op in enumerate(ops) if isinstance(op, AddAddress) and op.address.dev == "eth0"
    )
    assert all(not isinstance(op, (AddService, AddDest, StartDaemon)) for op in ops[first_iface:])
    assert AddAddress(model.Address("2001:db8:10::1", "eth0", 128)) in ops
    after = apply(standby, ops)
    assert plan(active, after) == ()
    draining = desired(settings, vips, Role.DRAINING, MEMBERS, SELF, frozenset(), RANGES)
    drain_ops = plan(draining, after)
    assert DelAddress(model.Address("2001:db8:10::", "eth0", 128)) in drain_ops
    assert (
        EditDest(model.Dest(model.ServiceKey("tcp", "2001:db8:10::", 0), "2001:db8::12", 0))
        in drain_ops
    )
    back = desired(settings, vips, Role.STANDBY, (), None, frozenset(), RANGES)
    assert [a.dev for a in apply(after, plan(back, after)).addresses if ":" in a.ip] == ["lo"] * 2


def test_an_announcement_round_is_garp_for_ipv4_and_one_na_per_ipv6_vip() -> None:
    vips = (*V6, *VIPS)
    round6 = announce(vips, "eth0", MEMBERS6)
    assert round6[-2:] == (SendNa("2001:db8:10::", "eth0"), SendNa("2001:db8:10::1", "eth0"))
    assert [type(op).__name__ for op in round6] == ["SendGarp"] * 4 + ["SendNa"] * 2
    assert announce(vips, "eth0") == round6[:4]  # no IPv6 member: IPv6 VIPs not announced


def test_only_host_routes_of_our_ipv6_vips_are_ever_deleted() -> None:
    vips = (*VIPS, *V6)
    ours = model.Address("2001:db8:10::1", "eth0", 128)  # what a dead active run left behind
    theirs = model.Address(
        "2001:db8:10::", "eth0", 64
    )  # the host's own, listed as a VIP by mistake
    state = model.KernelState(addresses=(*fresh_state().addresses, ours, theirs))
    ops = plan(want(Role.STANDBY, vips=vips), state)
    assert DelAddress(ours) in ops and DelAddress(theirs) not in ops
