"""The engine with IPv6 VIPs: members' IPv6 addresses from the member map, NA rounds, STATUS."""

from __future__ import annotations

from pathlib import Path

from cgp_ipvs_helper.core.protocol import render
from cgp_ipvs_helper.kernel.testing import FakeKernel
from cgp_ipvs_helper.plan.model import Address, Dest, ServiceKey
from cgp_ipvs_helper.plan.operations import AddAddress, AddDest, SendGarp, SendNa

from .conftest import VIPS, Clock, fresh_state, make_helper
from .test_helper import infos

V6 = ("2001:db8:10::", "2001:db8:10::1")
MAP = (
    "192.0.2.11 50000-54999 2001:db8::11\n"
    "192.0.2.12 55000-59999 2001:db8::12\n"
    "192.0.2.13 60000-64999\n"  # no IPv6 address
)
ALL3 = "192.0.2.11 192.0.2.12 192.0.2.13"


def member_map(tmp_path: Path, text: str = MAP) -> str:
    path = tmp_path / "cgp-ipvs-members"
    path.write_text(text)
    return str(path)


def test_ipv6_vips_are_balanced_over_the_members_with_an_ipv6_address(
    tmp_path: Path, clock: Clock
) -> None:
    kernel = FakeKernel(fresh_state())
    kernel.mac = "02:00:00:00:00:11"  # and the members' MACs known: no range dropped
    kernel.neighbours.update({ip: "02:00:00:00:00:12" for ip in ("192.0.2.12", "2001:db8::12")})
    kernel.neighbours["192.0.2.13"] = "02:00:00:00:00:13"
    path = member_map(tmp_path)
    h = make_helper(kernel, clock, vips=VIPS + V6, member_map=path)
    start = infos(h.start())
    assert f"2 IPv6 VIPs, balanced over the 2 members with an IPv6 address in {path}" in start
    assert AddAddress(Address("2001:db8:10::1", "lo", 128)) in kernel.take()
    out = h.handle(f"00001 ACTIVATE {ALL3}")
    assert render(out)[-1] == "00001 OK active vips=4 members=3"
    ops = kernel.take()
    tcp6 = ServiceKey("tcp", "2001:db8:10::", 0)
    assert AddDest(Dest(tcp6, "2001:db8::12", 100)) in ops
    assert not [op for op in ops if isinstance(op, AddDest) and op.dest.ip == "192.0.2.13"
                and ":" in op.dest.service.vip]  # fmt: skip
    assert AddAddress(Address("2001:db8:10::", "eth0", 128)) in ops
    assert [op for op in ops if isinstance(op, SendNa)] == [SendNa(v, "eth0") for v in V6]
    said = [t for t in infos(out) if "no IPv6 address" in t]
    assert said == [
        f"member 192.0.2.13 has no IPv6 address in {path}: left out of the IPv6 services"
    ]
    again = h.handle(f"00002 ACTIVATE {ALL3}")
    assert not [t for t in infos(again) if "no IPv6 address" in t]  # said once
    kernel.take()
    clock.advance(1.2)
    h.tick()  # the first repeated announcement round: GARP pairs and one NA per IPv6 VIP
    repeated = kernel.take()
    assert [op for op in repeated if isinstance(op, SendNa)] == [SendNa(v, "eth0") for v in V6]
    assert len([op for op in repeated if isinstance(op, SendGarp)]) == 2 * len(VIPS)
    status = render(h.handle("00003 STATUS"))[-1]
    assert status.startswith("00003 OK role=active vips=4 members=")
    assert status.endswith(" vips6=2 members6=2001:db8::11,2001:db8::12")


def test_without_ipv6_in_the_map_ipv6_vips_are_held_on_lo_only(
    tmp_path: Path, clock: Clock
) -> None:
    kernel = FakeKernel(fresh_state())
    path = member_map(tmp_path, "192.0.2.11 50000-54999\n")
    h = make_helper(kernel, clock, vips=VIPS + V6, member_map=path)
    assert (
        f"2 IPv6 VIPs held on lo only, not balanced: no member has an IPv6 address in {path} "
        "(its third column)"
    ) in infos(h.start())
    kernel.take()
    h.handle(f"00001 ACTIVATE {ALL3}")
    ops = kernel.take()
    assert not [op for op in ops if isinstance(op, SendNa)]
    assert not [op for op in ops if isinstance(op, AddAddress) and ":" in op.address.ip]
    assert render(h.handle("00002 STATUS"))[-1].endswith(" vips6=2 members6=")


def test_an_ipv4_only_file_keeps_status_as_it_was(helper) -> None:
    status = render(helper.handle("00001 STATUS"))[-1]
    assert "vips6" not in status and status.endswith("weight=100 conflicts=0")
