"""Steering replies to outgoing connections from a VIP to the member that opened them (pure).

Every packet to a VIP reaches the active balancer, replies to a member's outgoing connections
included, and IPVS would schedule a SYN-ACK or a UDP reply through the VIP's port-0 service to
any member. Each member's source ports come from its own range (the member map), so on the
balancer tc filters on the LAN interface's ingress match packets to a VIP whose destination port
lies in a member's range and send them to that member before netfilter and IPVS see them: the
frame's destination MAC becomes the owner's (from the neighbour table), its source MAC this
host's, and it goes straight back out of the same interface (act_skbmod, act_mirred). Nothing
is remembered per connection, so any balancer holding the map steers a reply from the first
packet it sees, whatever IPVS knows (a young connection whose entry the sync daemon has not
sent yet included), and a flood to those ports leaves IPVS untouched. The balancer's own range
cannot leave the host: its filter marks the packet for a firewall-mark service with this host
as its only real server (IPVS delivers to a local real server locally; without it the VIP's
port-0 service would schedule the reply to any member). While the owner's MAC is unknown its
range's filter drops (a TCP peer sends again; a reply scheduled to another member would be
answered with a reset).

The filters are in two levels: in chain 0 one filter per block of VIPs (the VIP set as CIDR
blocks, a /24 is one filter) jumps to chain TC_CHAIN, where one filter per range and protocol
acts. IPv4 filters sit at preference TC_PREF, IPv6 ones at TC_PREF6: the kernel keeps one
protocol per preference of a chain (tc: "Filter with specified priority/protocol not found" for
an IPv6 filter at an IPv4 one's preference), and flower matches addresses and ports only for
the protocol of its preference. Nothing else in chain 0 or TC_CHAIN is ours, nor any other
preference.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import netaddr
from attrs import Factory, field, frozen
from attrs.validators import in_

MARK_BASE = 0x43470000  # "CG": our marks are MARK_BASE | first port of the range
MARK_MASK = 0xFFFF0000
TC_PREF = 65000  # after every filter added with tc's default preferences (49152 and below)
TC_PREF6 = TC_PREF + 1  # the IPv6 filters: one protocol per preference
TC_CHAIN = 0x4347  # the chain of the per-range filters
VIP_CHAIN = 0
_PROTO_NUMBERS = {"tcp": 6, "udp": 17}
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def _port(_obj: object, _attr: object, value: int) -> None:
    if not 1 <= value <= 65535:
        raise ValueError(f"port out of range: {value}")


@frozen
class MemberRange:
    """One line of the member map: a member's LAN address, its source-port range, and its IPv6
    address if it has one."""

    ip: str
    first: int = field(validator=_port)
    last: int = field(validator=_port)
    ip6: str | None = None  # its IPv6 address on the LAN link: a real server of IPv6 VIPs

    @property
    def mark(self) -> int:
        return mark_of(self.first)

    def __str__(self) -> str:
        return f"{self.ip} {self.first}-{self.last}" + (f" {self.ip6}" if self.ip6 else "")


def mark_of(first: int) -> int:
    """The firewall mark of the range starting at `first` (stable across runs and members)."""
    return MARK_BASE | first


def is_our_mark(mark: int) -> bool:
    return mark & MARK_MASK == MARK_BASE


def _handle(_obj: object, _attr: object, value: int) -> None:
    if not 1 <= value <= 0xFFFFFFFF:
        raise ValueError(f"not a tc handle: {value}")


def _network(f: VipFilter) -> int:
    return int(netaddr.IPNetwork(f.prefix).network)


@frozen
class VipFilter:
    """Chain 0: packets to a block of VIPs go on to TC_CHAIN. Its tc handle: an IPv4 block's
    network address (blocks of a CIDR cover are disjoint, so handles are unique); an IPv6
    block's number in its sorted cover, given (128 bits do not fit a 32-bit handle; a new
    IPv6 block renumbers those after it, which the plan replaces in one batch)."""

    prefix: str  # "198.51.100.10/31", "2001:db8:10::/124"
    handle: int = field(default=Factory(_network, takes_self=True), validator=_handle)

    @property
    def chain(self) -> int:
        return VIP_CHAIN

    @property
    def ipv6(self) -> bool:
        return ":" in self.prefix

    @property
    def pref(self) -> int:
        return TC_PREF6 if self.ipv6 else TC_PREF


def _mac(_obj: object, _attr: object, value: str | None) -> None:
    if value is not None and not _MAC.fullmatch(value):
        raise ValueError(f"not a MAC address: {value!r}")


@frozen
class RangeFilter:
    """TC_CHAIN: packets of `proto` to a port in first..last. With `dmac`, rewritten to the
    owner's MAC `dmac` from this host's `smac` and sent back out of the interface; with `mark`,
    marked for this host's own firewall-mark service; with neither, dropped (the owner's MAC is
    not known yet). Its tc handle is the protocol number << 16 | first port."""

    proto: str = field(validator=in_(tuple(_PROTO_NUMBERS)))
    first: int = field(validator=_port)
    last: int = field(validator=_port)
    ipv6: bool = False  # matches IPv6 packets (at TC_PREF6)
    dmac: str | None = field(default=None, validator=_mac)  # lower case, colon-separated
    smac: str | None = field(default=None, validator=_mac)
    local: bool = False  # this host's own range: marked for IPVS, not sent out

    @property
    def mark(self) -> int:
        return mark_of(self.first)

    @property
    def dropped(self) -> bool:
        """Dropped for want of a MAC (its owner's or this host's)."""
        return not self.local and (self.dmac is None or self.smac is None)

    @property
    def handle(self) -> int:
        return _PROTO_NUMBERS[self.proto] << 16 | self.first

    @property
    def chain(self) -> int:
        return TC_CHAIN

    @property
    def pref(self) -> int:
        return TC_PREF6 if self.ipv6 else TC_PREF


def vip_blocks(vips: Iterable[str]) -> frozenset[VipFilter]:
    """The fewest CIDR blocks that hold exactly the VIPs: one chain-0 filter each (per family:
    cidr_merge keeps IPv4 and IPv6 apart and sorts each)."""
    merged = netaddr.cidr_merge([netaddr.IPAddress(v) for v in vips])
    v6 = [net for net in merged if net.version == 6]
    return frozenset(VipFilter(str(net)) for net in merged if net.version == 4) | {
        VipFilter(str(net), number) for number, net in enumerate(v6, 1)
    }


def range_filters(
    members: Iterable[MemberRange],
    macs: Mapping[str, str],
    smac: str | None,
    local: MemberRange | None = None,
    ipv6: bool = False,
) -> frozenset[RangeFilter]:
    """One filter per range and protocol (`ipv6`: for IPv6 packets, by the members' IPv6
    addresses): `local`'s range marked, every other sent to its owner's MAC in `macs` (by
    address), or dropped while that or this host's MAC `smac` is unknown."""
    out = set()
    for m in members:
        ip = m.ip6 if ipv6 else m.ip
        dmac = None if m == local or smac is None or ip is None else macs.get(ip)
        for proto in _PROTO_NUMBERS:
            if m == local:
                out.add(RangeFilter(proto, m.first, m.last, ipv6, local=True))
            else:
                out.add(RangeFilter(proto, m.first, m.last, ipv6, dmac, dmac and smac))
    return frozenset(out)
