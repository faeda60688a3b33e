"""The ACTIVATE planned while standby: the planner's takeover, less its members, is the full plan
whatever the state (plan/takeover.py); ready.py keeps it with its log lines."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cgp_ipvs_helper.core import ready
from cgp_ipvs_helper.core.protocol import Commands
from cgp_ipvs_helper.plan import model
from cgp_ipvs_helper.plan.operations import AddDests, each
from cgp_ipvs_helper.plan.outgoing import MemberMap
from cgp_ipvs_helper.plan.planner import announce, desired, plan, sysctl_paths
from cgp_ipvs_helper.plan.steering import MemberRange, RangeFilter, VipFilter
from cgp_ipvs_helper.plan.takeover import takeover

VIPS = [f"203.0.113.{i}" for i in range(12)] + ["2001:db8::5", "2001:db8::6"]
FOREIGN = ["198.51.100.1", "198.51.100.2"]
HOSTS = [f"192.0.2.{i}" for i in (11, 2, 130, 12, 99)]
IP6S = [[None, f"2001:db8::{n}"] for n in ("b", "1:0", "a", "2")]  # not in member order


@st.composite
def cases(draw):
    vips = draw(st.lists(st.sampled_from(VIPS), unique=True, max_size=6))
    retired = frozenset(draw(st.lists(st.sampled_from(VIPS), max_size=3))) - set(vips)
    members = draw(st.lists(st.sampled_from(HOSTS), unique=True, min_size=1, max_size=4))
    self_ip = draw(st.sampled_from(members))
    options = model.Settings(
        persistence=draw(st.sampled_from([0, 15])),
        weight=draw(st.sampled_from([0, 100, 7])),
        ports=draw(st.sampled_from([(), (("tcp", 25), ("udp", 5060))])),
    )
    addresses = [model.Address("192.0.2.11", "eth0", 24)] + [
        model.Address(ip, dev)
        for ip, dev in draw(
            st.lists(st.tuples(st.sampled_from(VIPS + FOREIGN), st.sampled_from(["lo", "eth0"])))
        )
    ]
    foreign = [model.Service(model.ServiceKey("tcp", ip, 80), "wlc", 0) for ip in FOREIGN]
    daemon = st.builds(
        model.Daemon, st.sampled_from(["master", "backup"]), st.sampled_from(["eth0", "eth1"]),
        st.sampled_from([0, 3]),
    )  # fmt: skip
    daemons = draw(st.sets(daemon))
    values = draw(st.lists(st.sampled_from(["0", "1", "2", None]), min_size=6, max_size=6))
    member_map = draw(maps())
    tc = None
    if member_map.seen:  # the helper reads tc once the map has had entries
        mac = draw(st.sampled_from([None, "02:00:00:00:00:01"]))
        owner = "02:00:00:00:00:02"
        ours = [VipFilter("203.0.113.0/30"), RangeFilter("tcp", 50000, 50999)]
        ours += [VipFilter("2001:db8::5/128", 1), RangeFilter("udp", 50000, 50999, ipv6=True)]
        ours += [RangeFilter("udp", 50000, 50999, False, owner, mac or owner)]
        found = draw(st.sets(st.sampled_from([(f.pref, f.chain, f.handle, f) for f in ours])))
        known = draw(st.sets(st.sampled_from([*HOSTS, *(ip for six in IP6S for ip in six if ip)])))
        macs = frozenset((ip, owner) for ip in known)
        tc = model.TcState(draw(st.sampled_from([None, "clsact"])), frozenset(found), mac, macs)
    state = model.KernelState(
        addresses=tuple(dict.fromkeys(addresses)),
        sysctls=dict(zip(sorted(sysctl_paths("eth0")), values)),
        services=frozenset(draw(st.sets(st.sampled_from(foreign)))),
        dests=frozenset(model.Dest(s.key, "192.0.2.50", 1) for s in foreign),
        daemons=frozenset(daemons),
        tc=tc,
    )
    return options, tuple(vips), retired, members, self_ip, member_map, state


@st.composite
def maps(draw):
    """A member map: none, or ranges for some of the hosts, some with an IPv6 address."""
    hosts = draw(st.lists(st.sampled_from(HOSTS), unique=True, max_size=4))
    ranges = tuple(
        MemberRange(ip, 50000 + i * 1000, 50999 + i * 1000, draw(st.sampled_from(IP6S[i])))
        for i, ip in enumerate(hosts)
    )
    return MemberMap("members", ranges, bool(ranges) or draw(st.booleans()))


@settings(max_examples=300, deadline=None)
@given(cases())
def test_a_takeover_planned_before_its_members_is_the_plan(case) -> None:
    """From a state with no service of ours, the plan made without the members, then given
    them (one AddDests value per family), is the plan made with them."""
    options, vips, retired, members, self_ip, member_map, state = case
    ahead = takeover(options, vips, retired, member_map, state)
    assert ahead is not None
    want = desired(
        options, vips, model.Role.TAKING_OVER, members, self_ip, retired, member_map, state
    )
    ops = ahead.ops(options, members, self_ip)
    assert each(ops) == list(plan(want, state))
    assert all(len(op) for op in ops if isinstance(op, AddDests))  # no empty one
    assert [op for op in ops if not isinstance(op, AddDests)] == [*ahead.before, *ahead.after]


@settings(max_examples=100, deadline=None)
@given(cases())
def test_the_activation_is_kept_with_its_lines_while_it_fits(case) -> None:
    options, vips, retired, members, self_ip, member_map, state = case
    prepared = ready.prepare(options, vips, retired, member_map, state)
    assert prepared is not None and prepared.state == state
    members6 = member_map.ipv6()
    ahead = takeover(options, vips, retired, member_map, state)
    assert ahead is not None and ahead.members6 == members6
    garp = announce(vips, options.iface, members6)
    activation = ready.activation(prepared, options, members, self_ip)
    assert activation == ahead.ops(options, members, self_ip) + garp
    built = prepared.ops()
    assert built == ahead.before + ahead.after + garp and len(set(built)) == len(built)
    assert [prepared.logged[op] for op in built] == [f"* {op}\n".encode() for op in built]
    logged = Commands(activation, prepared.logged)
    assert logged.lines() == Commands(activation).lines() == [f"* {op}" for op in each(activation)]
    assert prepared.fits(vips, retired, member_map, state)
    assert not prepared.fits(vips + ("192.0.2.200",), retired, member_map, state)
    other = MemberMap("members", (MemberRange("192.0.2.11", 40000, 40999, "2001:db8::b"),), True)
    assert not prepared.fits(vips, retired, other, state)
    if member_map.members:  # the map emptied after: the plan kept is not its plan
        member_map.update(())
        assert not prepared.fits(vips, retired, member_map, state)


def test_a_state_with_a_service_of_ours_is_planned_in_full() -> None:
    ours = model.Service(model.ServiceKey("udp", VIPS[0], 0), "wlc", 15)
    state = model.KernelState(services=frozenset([ours]))
    none = MemberMap("members")
    assert ready.prepare(model.Settings(), (VIPS[0],), frozenset(), none, state) is None
    assert ready.prepare(model.Settings(), (VIPS[1],), frozenset([VIPS[0]]), none, state) is None
    assert ready.prepare(model.Settings(), (VIPS[1],), frozenset(), none, state) is not None
    steering = model.Service(model.ServiceKey.for_mark(0x4347C350), "wlc", 0)  # a range's: ours too
    state = model.KernelState(services=frozenset([steering]), tc=model.TcState())
    assert ready.prepare(model.Settings(), (VIPS[1],), frozenset(), none, state) is None
