"""Planning the steering of replies to outgoing connections from a VIP (pure; see steering.py).

`steer()` gives what the member map asks of a role's desired state (`Steering`): this member's
ip_local_port_range (every role), and while it balances (`balancing`: ACTIVE, TAKING_OVER or
DRAINING) the tc filters that send each range's replies to its owner's MAC, read from the
neighbour table of the LAN interface (`TcState.neighbours`), and for this host's own range a
firewall-mark service with this host as its only real server, never quiesced by a drain. With
IPv6 VIPs the same again for IPv6 packets, by the members' IPv6 neighbours (the kernel's range
serves both families). The planner adds it to the role's state and plans the filters
(planner.desired, planner.plan).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from attrs import define, frozen

from cgp_ipvs_helper.plan.model import (
    Dest,
    KernelState,
    Service,
    ServiceKey,
    Sysctl,
    TcState,
    balanced_vips,
    is_ipv6,
)
from cgp_ipvs_helper.plan.operations import Operation
from cgp_ipvs_helper.plan.steering import (
    MemberRange,
    RangeFilter,
    VipFilter,
    range_filters,
    vip_blocks,
)
from cgp_ipvs_helper.plan.tcops import AddFilter

PORT_RANGE = "net/ipv4/ip_local_port_range"
# When a plan drops a range (its owner's MAC not known yet), the neighbours are read again this
# many seconds later (planner.recheck): by then the resolution the read asked for has been
# answered, if it will be.
RESOLVED_WITHIN = 1.0
SCHEDULER = "wlc"
WEIGHT = 100


def local_member(members: Sequence[MemberRange], local_ips: Collection[str]) -> MemberRange | None:
    """The map entry of this host: the one whose address this host holds."""
    return next((m for m in members if m.ip in local_ips), None)


@frozen
class Steering:
    """What the member map adds to a role's desired state (an emptied map: no filters, no
    services: ours are removed)."""

    sysctls: tuple[Sysctl, ...] = ()
    services: frozenset[Service] = frozenset()
    dests: frozenset[Dest] = frozenset()
    filters: frozenset[VipFilter | RangeFilter] = frozenset()


def steer(
    members: Sequence[MemberRange],
    balancing: bool,
    vips: Collection[str],
    local: MemberRange | None,
    tc: TcState | None = None,
) -> Steering:
    """The member map's part of a role's desired state; `tc`: what the LAN interface holds
    (its MAC, its neighbours' MACs)."""
    sysctls: tuple[Sysctl, ...] = ()
    if local is not None:
        sysctls += (Sysctl(PORT_RANGE, f"{local.first} {local.last}"),)
    services: frozenset[Service] = frozenset()
    dests: frozenset[Dest] = frozenset()
    filters: frozenset[VipFilter | RangeFilter] = frozenset()
    if balancing and members:
        members6 = _members6(members, vips)
        if local is not None:  # only this host's own range goes through IPVS
            owners = [(ServiceKey.for_mark(local.mark), local.ip)]
            if local in members6:
                owners.append((ServiceKey.for_mark(local.mark, True), str(local.ip6)))
            services |= {Service(key, SCHEDULER, 0) for key, _ in owners}
            dests |= {Dest(key, ip, WEIGHT) for key, ip in owners}
        filters = _filters(members, members6, vips, local, tc or TcState())
    return Steering(sysctls, services, dests, filters)


def _members6(members: Sequence[MemberRange], vips: Collection[str]) -> list[MemberRange]:
    # IPv6 VIPs are balanced once a member has an IPv6 address (model.balanced_vips);
    # a member without one gets no IPv6 filter: its range's IPv6 replies are scheduled
    return [m for m in members if m.ip6] if any(map(is_ipv6, vips)) else []


def _filters(
    members: Sequence[MemberRange],
    members6: Sequence[MemberRange],
    vips: Collection[str],
    local: MemberRange | None,
    tc: TcState,
) -> frozenset[VipFilter | RangeFilter]:
    """A balancer's filters, by the MACs `tc` holds."""
    macs = dict(tc.neighbours)
    filters = range_filters(members, macs, tc.mac, local)
    filters |= range_filters(members6, macs, tc.mac, local, ipv6=True)
    return filters | vip_blocks(balanced_vips(vips, members6))


def unresolved(ops: Sequence[Operation]) -> bool:
    """Whether `ops` add a filter that drops a range for want of its owner's MAC."""
    return any(
        isinstance(op, AddFilter) and isinstance(op.filter, RangeFilter) and op.filter.dropped
        for op in ops
    )


def ipv6_note(vips6: int, members6: int, path: str) -> str:
    """What to log at start about the IPv6 VIPs: balanced, or held on lo only, and why."""
    if members6:
        return (
            f"{vips6} IPv6 VIPs, balanced over the {members6} members with an IPv6 address "
            f"in {path}"
        )
    return (
        f"{vips6} IPv6 VIPs held on lo only, not balanced: no member has an IPv6 address in "
        f"{path} (its third column)"
    )


@define
class MemberMap:
    """The member map as one helper run holds it. `seen`: it had entries at some time in this
    run, so tc is read and our filters are kept in line (removed once the map is emptied);
    before that, tc is never read or touched: without a map the helper works as it always did."""

    path: str
    members: tuple[MemberRange, ...] = ()
    seen: bool = False

    def update(self, members: tuple[MemberRange, ...]) -> None:
        self.members = members
        self.seen |= bool(members)

    def ipv6(self) -> dict[str, str]:
        """Member (by LAN IPv4 address) -> its IPv6 address: the real servers of IPv6 VIPs."""
        return {m.ip: m.ip6 for m in self.members if m.ip6}

    def ips(self) -> list[str]:
        """The members by LAN address, in the map's order."""
        return [m.ip for m in self.members]

    def paths(self) -> frozenset[str]:
        return frozenset({PORT_RANGE}) if self.seen else frozenset()

    def tc_dev(self, iface: str) -> str | None:
        return iface if self.seen else None

    def notes(self, local_ips: Collection[str]) -> list[str]:
        """What to log at start: whether replies are steered, and this host's range."""
        if not self.members:
            return [f"no member map ({self.path}): outgoing connections from VIPs are not steered"]
        local = local_member(self.members, local_ips)
        return [
            f"member map {self.path}: {len(self.members)} port ranges; replies to outgoing "
            "connections from VIPs are steered to their member while this helper balances",
            f"this host is {local.ip} in the member map: ip_local_port_range "
            f"{local.first}-{local.last}"
            if local
            else "no address of this host is in the member map: ip_local_port_range left as it is",
        ]

    def steering(
        self, balancing: bool, vips: Collection[str], actual: KernelState
    ) -> Steering | None:
        """Its part of the desired state against `actual` (this host's entry is the one whose
        address it holds, a VIP aside); None while it never had entries: tc is left alone."""
        if not self.seen:
            return None
        local_ips = {a.ip for a in actual.addresses} - set(vips)
        local = local_member(self.members, local_ips)
        return steer(self.members, balancing, vips, local, actual.tc)

    def filters(
        self, vips: Collection[str], local_ips: Collection[str], tc: TcState
    ) -> frozenset[VipFilter | RangeFilter] | None:
        """A balancer's filters by the MACs `tc` holds, for this host's addresses `local_ips`
        (VIPs excluded); None while the map never had entries."""
        if not self.seen:
            return None
        if not self.members:
            return frozenset()
        local = local_member(self.members, local_ips)
        return _filters(self.members, _members6(self.members, vips), vips, local, tc)

    def neighbours(self) -> frozenset[str]:
        """The members' addresses (IPv4 and IPv6) whose MACs the balancer's filters need."""
        if not self.seen:
            return frozenset()
        return frozenset(ip for m in self.members for ip in (m.ip, m.ip6) if ip)
