"""The engine with a member map: it logs the map, steers (IPv6 too), and reads again within
a second when a MAC is missing."""

from __future__ import annotations

from cgp_ipvs_helper.core.converge import RECHECKED
from cgp_ipvs_helper.core.engine import Helper
from cgp_ipvs_helper.core.protocol import render
from cgp_ipvs_helper.core.session import HANDOVER_S
from cgp_ipvs_helper.kernel.testing import FakeKernel
from cgp_ipvs_helper.plan.model import KernelState
from cgp_ipvs_helper.plan.outgoing import PORT_RANGE, RESOLVED_WITHIN, unresolved

from .conftest import Clock, fresh_state, info_lines, make_helper
from .mapcases import FILTERS, FILTERS6, MACS, MACS6, OWN, OWN6, VIPS6, with_tc

MAP_TEXT = "192.0.2.11 50000-54999\n192.0.2.12 55000-59999\n192.0.2.14 60000-64999\n"


def map_helper(tmp_path, text: str | None = MAP_TEXT, state: KernelState | None = None):
    path = tmp_path / "cgp-ipvs-members"
    if text is not None:
        path.write_text(text)
    kernel = FakeKernel(state or with_tc(fresh_state(), ingress=None))
    return make_helper(kernel, Clock(), member_map=str(path)), kernel, path


def test_start_logs_the_map_and_sets_this_members_range(tmp_path) -> None:
    h, kernel, path = map_helper(tmp_path)
    lines = info_lines(h.start())
    assert f"member map {path}: 3 port ranges; replies to outgoing connections from VIPs are " \
        "steered to their member while this helper balances" in lines  # fmt: skip
    assert "this host is 192.0.2.11 in the member map: ip_local_port_range 50000-54999" in lines
    assert "sysctl -w 'net.ipv4.ip_local_port_range=50000 54999'" in lines
    assert kernel.sysctls[PORT_RANGE] == "50000 54999"
    assert not kernel.filters and not [s for s in kernel.services if s.fwmark]
    out = h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12 192.0.2.13")
    assert render(out)[-1] == "1 OK active vips=2 members=3"
    assert set(kernel.filters.values()) == FILTERS and kernel.ingress == "clsact"
    assert {k for k in kernel.services if k.fwmark} == {OWN}
    logged = info_lines(out)
    assert "tc qdisc add dev eth0 clsact" in logged
    assert logged.index("ipvsadm -A -f 1128776528 -s wlc") < logged.index(
        "tc qdisc add dev eth0 clsact"
    )
    kernel.take()
    h.handle("2 ACTIVATE 192.0.2.11 192.0.2.12 192.0.2.13")
    assert {type(op).__name__ for op in kernel.take()} == {"SendGarp"}  # converged: no change


def test_no_map_is_one_line_and_nothing_is_steered(tmp_path) -> None:
    h, kernel, path = map_helper(tmp_path, text=None)
    lines = info_lines(h.start())
    assert [line for line in lines if "member map" in line] == [
        f"no member map ({path}): outgoing connections from VIPs are not steered"
    ]
    h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    assert not kernel.filters  # (the clsact qdisc holds the takeover's reset guards)
    assert kernel.sysctls[PORT_RANGE] == "32768\t60999"


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
    kernel = FakeKernel(with_tc(fresh_state(), ingress=None, macs=MACS6))
    h = make_helper(kernel, Clock(), vips=VIPS6, member_map=str(path))
    h.start()
    out = h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    assert render(out)[-1] == "1 OK active vips=4 members=2"
    assert set(kernel.filters.values()) == FILTERS | FILTERS6
    assert {k for k in kernel.services if k.fwmark} == {OWN, OWN6}
    # 192.0.2.14 is not in the ACTIVATE list, but its range is steered: said for it
    said = [line for line in info_lines(out) if "no IPv6 address" in line]
    assert said == [f"member 192.0.2.14 has no IPv6 address in {path}: left out of the IPv6 "
                    "services"]  # fmt: skip
    kernel.take()
    again = h.handle("2 ACTIVATE 192.0.2.11 192.0.2.12")
    assert {type(op).__name__ for op in kernel.take()} == {"SendGarp", "SendNa"}
    assert not [line for line in info_lines(again) if "no IPv6 address" in line]


def test_a_range_dropped_for_want_of_a_mac_is_looked_at_again_within_a_second(tmp_path) -> None:
    clock = Clock()
    path = tmp_path / "cgp-ipvs-members"
    path.write_text(MAP_TEXT)
    kernel = FakeKernel(
        with_tc(fresh_state(), ingress=None, macs={"192.0.2.12": MACS["192.0.2.12"]})
    )
    h = make_helper(kernel, clock, member_map=str(path))
    h.start()
    h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    assert {f.first for f in kernel.filters.values() if getattr(f, "dropped", False)} == {60000}
    assert h.next_deadline() == clock.now + RESOLVED_WITHIN
    h.handle("2 STATUS")  # a request does not put it off
    assert h.next_deadline() == clock.now + RESOLVED_WITHIN
    kernel.neighbours["192.0.2.14"] = MACS["192.0.2.14"]  # the kernel resolved it meanwhile
    clock.advance(RESOLVED_WITHIN)
    kernel.take()
    reads, kernel.observe = kernel.observe, None  # the neighbours alone are read again
    out = render(h.tick())
    kernel.observe = reads
    assert f"* {RECHECKED}" in out and "* refresh: the kernel drifted" not in " ".join(out)
    assert set(kernel.filters.values()) == FILTERS
    assert {type(op).__name__ for op in kernel.take()} == {"DelFilter", "AddFilter"}
    assert h.recheck_due is None  # once
    h.handle("3 ACTIVATE 192.0.2.11")  # the kernel as made is still trusted: a change, no read
    assert {f.first for f in kernel.filters.values() if getattr(f, "dropped", False)} == set()


def _started_without_macs(tmp_path) -> tuple[Clock, FakeKernel, Helper]:
    """A helper started with the member map, no member's MAC known yet."""
    clock = Clock()
    path = tmp_path / "cgp-ipvs-members"
    path.write_text(MAP_TEXT)
    kernel = FakeKernel(with_tc(fresh_state(), ingress=None, macs={}))
    h = make_helper(kernel, clock, member_map=str(path))
    h.start()
    return clock, kernel, h


def test_a_mac_still_missing_at_the_recheck_waits_for_the_refresh(tmp_path) -> None:
    clock, kernel, h = _started_without_macs(tmp_path)
    h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    clock.advance(RESOLVED_WITHIN)
    kernel.take()
    assert render(h.tick()) == [] and not kernel.take()  # nothing changes, nothing said
    assert h.recheck_due is None
    clock.advance(HANDOVER_S)
    h.tick()  # the takeover's end (a full step)
    kernel.neighbours.update(MACS)
    clock.now = h.session.refresh_due
    assert "* refresh: the kernel drifted from the desired state" in render(h.tick())
    assert set(kernel.filters.values()) == FILTERS


def test_a_standby_reads_again_once_when_its_activate_ahead_would_drop_a_range(tmp_path) -> None:
    clock, kernel, h = _started_without_macs(tmp_path)
    assert h.next_deadline() == clock.now + RESOLVED_WITHIN
    clock.advance(RESOLVED_WITHIN)
    ahead = h.ready
    h.tick()  # still unknown (a member that is down): back to every -t
    assert h.ready is ahead and h.next_deadline() == h.session.refresh_due
    kernel.neighbours.update(MACS)
    clock.now = h.session.refresh_due
    h.tick()
    assert h.ready is not None and not unresolved(h.ready.ops())
    h.handle("1 ACTIVATE 192.0.2.11 192.0.2.12")
    assert set(kernel.filters.values()) == FILTERS
