"""The ACTIVATE planned while standby (ready.py) equals the full plan, whatever the state."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cgp_ipvs_helper import ready
from cgp_ipvs_helper.model import (
    Address,
    Daemon,
    Dest,
    KernelState,
    Role,
    Service,
    ServiceKey,
    Settings,
)
from cgp_ipvs_helper.planner import announce, desired_state, plan, sysctl_paths

VIPS = [f"203.0.113.{i}" for i in range(12)] + ["2001:db8::5", "2001:db8::6"]
FOREIGN = ["198.51.100.1", "198.51.100.2"]
HOSTS = [f"192.0.2.{i}" for i in (11, 2, 130, 12, 99)]


@st.composite
def cases(draw):
    vips = draw(st.lists(st.sampled_from(VIPS), unique=True, max_size=6))
    retired = frozenset(draw(st.lists(st.sampled_from(VIPS), max_size=3))) - set(vips)
    members = draw(st.lists(st.sampled_from(HOSTS), unique=True, min_size=1, max_size=4))
    self_ip = draw(st.sampled_from(members))
    options = Settings(
        persistence=draw(st.sampled_from([0, 15])),
        weight=draw(st.sampled_from([0, 100, 7])),
        ports=draw(st.sampled_from([(), (("tcp", 25), ("udp", 5060))])),
    )
    addresses = [Address("192.0.2.11", "eth0", 24)] + [
        Address(ip, dev)
        for ip, dev in draw(
            st.lists(st.tuples(st.sampled_from(VIPS + FOREIGN), st.sampled_from(["lo", "eth0"])))
        )
    ]
    foreign = [Service(ServiceKey("tcp", ip, 80), "wlc", 0) for ip in FOREIGN]
    daemon = st.builds(
        Daemon, st.sampled_from(["master", "backup"]), st.sampled_from(["eth0", "eth1"]),
        st.sampled_from([0, 3]),
    )  # fmt: skip
    daemons = draw(st.sets(daemon))
    values = draw(st.lists(st.sampled_from(["0", "1", "2", None]), min_size=6, max_size=6))
    state = KernelState(
        addresses=tuple(dict.fromkeys(addresses)),
        sysctls=dict(zip(sorted(sysctl_paths("eth0")), values)),
        services=frozenset(draw(st.sets(st.sampled_from(foreign)))),
        dests=frozenset(Dest(s.key, "192.0.2.50", 1) for s in foreign),
        daemons=frozenset(daemons),
    )
    return options, tuple(vips), retired, members, self_ip, state


@settings(max_examples=300, deadline=None)
@given(cases())
def test_the_prepared_activation_is_the_plan(case) -> None:
    options, vips, retired, members, self_ip, state = case
    prepared = ready.prepare(options, vips, retired, state)
    if any(":" in v for v in vips):
        assert prepared is None  # IPv6 real servers come from the member map: planned in full
        return
    assert prepared is not None and prepared.state is state
    desired = desired_state(options, vips, Role.ACTIVE, members, self_ip, retired)
    expected = plan(desired, state) + announce(vips, options.iface)
    assert ready.activation(prepared, options, members, self_ip) == expected
    built = prepared.ops()
    assert all(op in expected for op in built) and len(set(built)) == len(built)
    assert [prepared.lines[id(op)] for op in built] == [f"* {op}" for op in built]
    assert prepared.fits(vips, retired, state)
    assert not prepared.fits(vips + ("192.0.2.200",), retired, state)


def test_a_state_with_a_service_of_ours_is_planned_in_full() -> None:
    ours = Service(ServiceKey("udp", VIPS[0], 0), "wlc", 15)
    state = KernelState(services=frozenset([ours]))
    assert ready.prepare(Settings(), (VIPS[0],), frozenset(), state) is None
    assert ready.prepare(Settings(), (VIPS[1],), frozenset([VIPS[0]]), state) is None  # retired
    assert ready.prepare(Settings(), (VIPS[1],), frozenset(), state) is not None
