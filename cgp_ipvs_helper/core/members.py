"""Who is balanced, checked against this host: the files that name VIPs and members, and the
member list of an ACTIVATE.

The VIP file and the member map are loaded together (a VIP that is an address of this host is
refused, and the map is checked against the VIPs), and start says what they mean: whether
replies to outgoing connections are steered, whether the IPv6 VIPs are balanced. An ACTIVATE's
members become the real servers, with this host among them; a member the map gives no IPv6
address is left out of the IPv6 services, said once. Pure except for the `load` callable given:
errors are raised, the helper answers them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Callable

from attrs import frozen

from cgp_ipvs_helper.config.memberfile import load_members
from cgp_ipvs_helper.core.hostaddrs import clash_error, subnet_edges
from cgp_ipvs_helper.core.protocol import BadRequest
from cgp_ipvs_helper.errors import VipFileError
from cgp_ipvs_helper.plan.model import KernelState, Settings, is_ipv6
from cgp_ipvs_helper.plan.outgoing import MemberMap, ipv6_note
from cgp_ipvs_helper.plan.planner import DEFAULT_PORTS
from cgp_ipvs_helper.plan.steering import MemberRange
from cgp_ipvs_helper.shown import escaped


def check_local(settings: Settings, vips: Sequence[str], actual: KernelState) -> None:
    """A VIP that is an address of this host (its LAN address, by mistake) is a VIP file
    error naming its line and the interface: taking it would take it off the LAN."""
    error = clash_error(vips, actual, settings.iface, settings.vipfile)
    if error is not None:
        raise error


def load(
    settings: Settings, load_vips: Callable[[str], tuple[str, ...]], actual: KernelState
) -> tuple[tuple[str, ...], tuple[MemberRange, ...]]:
    """The VIP file (refused if it lists an address this host holds), then the member map
    checked against it; VipFileError from either."""
    vips = load_vips(settings.vipfile)
    check_local(settings, vips, actual)
    ports = [port for _, port in settings.ports or DEFAULT_PORTS]
    return vips, load_members(settings.member_map, ports, vips)


def no_vips(settings: Settings) -> str:
    return f"WARNING: {escaped(settings.vipfile)} lists no VIP: there is nothing to balance"


def refused(error: VipFileError) -> str:
    """What start says when the VIP file or the member map is wrong: the helper waits."""
    return (
        f"ERROR {error}; nothing is changed until it is fixed "
        "(then send SIGHUP or restart the helper)"
    )


def start_notes(
    settings: Settings, vips: Sequence[str], member_map: MemberMap, actual: KernelState
) -> list[str]:
    """What start says about a good VIP file and member map: steering, this host's port range,
    and how the IPv6 VIPs are served."""
    local_ips = {a.ip for a in actual.addresses} - set(vips)
    notes = member_map.notes(local_ips)
    v6 = sum(is_ipv6(v) for v in vips)
    if v6:
        notes.append(ipv6_note(v6, len(member_map.ipv6()), settings.member_map))
    return notes


@frozen(eq=False)
class Resolver:
    """What an ACTIVATE's members are checked against, worked out from one kernel state (while
    standby, for the state an ACTIVATE from standby uses): the VIP file error a VIP that has
    become an address of this host makes, the VIPs, the network and broadcast addresses of -i's
    IPv4 subnets, this host's own addresses and -i's first one. An ACTIVATE then looks its
    members up instead of working these out with code it runs for the first time (cold, in a
    process woken by the request)."""

    error: VipFileError | None
    vips: frozenset[str]
    edges: Mapping[str, str]
    local: frozenset[str]
    primary: str | None
    iface: str

    @classmethod
    def of(cls, settings: Settings, vips: Sequence[str], actual: KernelState) -> Resolver:
        iface, wanted = settings.iface, frozenset(vips)
        return cls(
            clash_error(vips, actual, iface, settings.vipfile),
            wanted,
            subnet_edges(actual.addresses_on(iface)),
            frozenset(a.ip for a in actual.addresses) - wanted,
            actual.primary_ip(iface, excluding=wanted),
            iface,
        )

    def resolve(self, listed: Sequence[str]) -> tuple[list[str], str]:
        """An ACTIVATE's members → the real servers and this host's address among them (added
        if no listed member is local). VipFileError if a VIP is an address of this host;
        BadRequest for a VIP or a subnet edge listed as a member."""
        if self.error is not None:
            raise self.error.with_traceback(None)  # (raised again: not onto its last traceback)
        for m in listed:
            if m in self.vips:
                raise BadRequest(None, f"member {m} is a VIP")
            edge = self.edges.get(m)
            if edge:
                raise BadRequest(None, f"member {m} is the {edge}")
        members = list(listed)
        self_ip = next((m for m in members if m in self.local), None)
        if self_ip is None:
            if self.primary is None:
                iface = self.iface
                raise BadRequest(None, f"no listed member is local and {iface} has no IPv4 address")
            self_ip = self.primary
            members.append(self_ip)
        return members, self_ip


def without_ipv6(
    settings: Settings,
    vips: Sequence[str],
    members: Sequence[str],
    by_member: Mapping[str, str],
    told: set[str],
) -> list[str]:
    """Say once per member (`told` remembers) that it is left out of the IPv6 services (its
    port range's, for replies to IPv6 VIPs, included), while IPv6 VIPs are balanced."""
    if not by_member or not any(is_ipv6(v) for v in vips):
        return []
    notes = []
    for m in members:
        if m not in by_member and m not in told:
            told.add(m)
            notes.append(
                f"member {m} has no IPv6 address in {settings.member_map}: "
                "left out of the IPv6 services"
            )
    return notes
