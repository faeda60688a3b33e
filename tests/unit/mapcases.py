"""The member map, MACs and steering filters the member-map tests share."""

from __future__ import annotations

import attrs

from cgp_ipvs_helper.plan.model import KernelState, ServiceKey, TcState
from cgp_ipvs_helper.plan.outgoing import PORT_RANGE
from cgp_ipvs_helper.plan.steering import MemberRange, RangeFilter, VipFilter

from .conftest import SELF, VIPS

MAP = (
    MemberRange(SELF, 50000, 54999),
    MemberRange("192.0.2.12", 55000, 59999),
    MemberRange("192.0.2.14", 60000, 64999),  # in the map, not in the ACTIVATE list
)
LISTED = (SELF, "192.0.2.12", "192.0.2.13")
OWN_MAC = "02:00:00:00:00:11"  # this host's on eth0
MACS = {"192.0.2.12": "02:00:00:00:00:12", "192.0.2.14": "02:00:00:00:00:14"}
OWN = ServiceKey.for_mark(MAP[0].mark)  # the one firewall-mark service: this host's range
FILTERS = {VipFilter("198.51.100.10/31")} | {
    RangeFilter(p, m.first, m.last, False, MACS.get(m.ip), OWN_MAC if m != MAP[0] else None,
                m == MAP[0])
    for m in MAP
    for p in ("tcp", "udp")
}  # fmt: skip


def lan(macs=MACS, mac=OWN_MAC, filters=(), ingress="clsact") -> TcState:
    return TcState(
        ingress,
        frozenset((f.pref, f.chain, f.handle, f) for f in filters),
        mac,
        frozenset(macs.items()),
    )


def with_tc(
    state: KernelState, ingress: str | None = "clsact", filters=(), macs=MACS
) -> KernelState:
    return attrs.evolve(
        state,
        sysctls={**state.sysctls, PORT_RANGE: "32768\t60999"},
        tc=lan(macs, OWN_MAC, filters, ingress),
    )


VIPS6 = (*VIPS, "2001:db8:10::", "2001:db8:10::1")
MAP6 = (  # 192.0.2.14 has no IPv6 address: no IPv6 filter for its range
    MemberRange(SELF, 50000, 54999, "2001:db8::11"),
    MemberRange("192.0.2.12", 55000, 59999, "2001:db8::12"),
    MAP[2],
)
OWN6 = ServiceKey.for_mark(MAP6[0].mark, ipv6=True)
MACS6 = {**MACS, "2001:db8::12": "02:00:00:00:00:12"}
FILTERS6 = {VipFilter("2001:db8:10::/127", 1)} | {
    RangeFilter(p, m.first, m.last, True, MACS6.get(m.ip6), OWN_MAC if m != MAP6[0] else None,
                m == MAP6[0])
    for m in MAP6[:2]
    for p in ("tcp", "udp")
}  # fmt: skip
