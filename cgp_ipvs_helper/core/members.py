"""Who is balanced, checked against this host: the files that name VIPs and members, and the
member list of an ACTIVATE.

The VIP file is needed to balance: a bad one (or a VIP that is an address of this host) stops
the helper from balancing until it is fixed. The member map is optional: it is read after the
VIP file and checked against it, and a bad one only degrades, balancing goes on without it (or
with its last good state read by this run), said at start, on SIGHUP, on each refresh and in
STATUS. Start says what the files mean: whether replies to outgoing connections are steered,
whether the IPv6 VIPs are balanced. An ACTIVATE's members become the real servers, with this
host among them; a member the map gives no IPv6 address is left out of the IPv6 services, said
once. Pure except for the `load` callable given and the map's file: errors are raised or kept,
the helper answers them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Callable

from attrs import frozen

from cgp_ipvs_helper.config.memberfile import parse_members, read_members
from cgp_ipvs_helper.core.hostaddrs import clash_error, subnet_edges
from cgp_ipvs_helper.core.protocol import BadRequest
from cgp_ipvs_helper.errors import MemberFileError, VipFileError
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


def load_vips(
    settings: Settings, load: Callable[[str], tuple[str, ...]], actual: KernelState
) -> tuple[str, ...]:
    """The VIP file, refused (VipFileError) if it lists an address this host holds."""
    vips = load(settings.vipfile)
    check_local(settings, vips, actual)
    return vips


@frozen
class MemberFile:
    """The member map as one helper run holds it: the ranges in force, the bytes they were
    parsed from (the file's last good state this run read; empty: no map), and the error of the
    file as last read, if it was bad."""

    ranges: tuple[MemberRange, ...] = ()
    source: bytes = b""
    error: MemberFileError | None = None

    def read(self, settings: Settings, vips: Sequence[str]) -> MemberFile:
        """The file read again and checked against `vips`. If it is bad, the ranges in force
        stay, checked again against `vips` (none if they no longer pass), with the error."""
        path, ports = settings.member_map, [port for _, port in settings.ports or DEFAULT_PORTS]
        try:
            source = read_members(path)
            return MemberFile(parse_members(source, path, ports, vips), source)
        except MemberFileError as exc:
            error = exc
        try:
            return MemberFile(parse_members(self.source, path, ports, vips), self.source, error)
        except MemberFileError:  # a VIP now: the last good map does not fit the VIP file
            return MemberFile(error=error)

    def refused(self) -> str:
        """What start, SIGHUP and each refresh say while the file is bad: what is in force."""
        if self.ranges:
            kept = f"the last good member map stays in force ({len(self.ranges)} port ranges)"
        else:
            kept = (
                "balancing goes on without the member map: replies to outgoing connections "
                "from VIPs are not steered"
            )
        return f"ERROR {self.error}; {kept} until it is fixed (then send SIGHUP)"


def no_vips(settings: Settings) -> str:
    return f"WARNING: {escaped(settings.vipfile)} lists no VIP: there is nothing to balance"


def refused(error: VipFileError) -> str:
    """What start says when the VIP file is wrong: the helper waits."""
    return (
        f"ERROR {error}; nothing is changed until it is fixed "
        "(then send SIGHUP or restart the helper)"
    )


def start_notes(
    settings: Settings,
    vips: Sequence[str],
    member_map: MemberMap,
    member_file: MemberFile,
    actual: KernelState,
) -> list[str]:
    """What start says about a good VIP file and the member map: steering (or the map's error),
    this host's port range, and how the IPv6 VIPs are served."""
    local_ips = {a.ip for a in actual.addresses} - set(vips)
    if member_file.error is not None:
        notes = [member_file.refused()]
    else:
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
