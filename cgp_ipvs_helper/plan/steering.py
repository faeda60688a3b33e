"""Steering replies to outgoing connections from a VIP to the member that opened them (pure).

Every packet to a VIP reaches the active balancer, replies to a member's outgoing connections
included, and IPVS would schedule a SYN-ACK or a UDP reply through the VIP's port-0 service to
any member. Each member's source ports come from its own range (the member map), so on the
balancer tc marks packets to a VIP whose destination port lies in a range, and one IPVS
firewall-mark service per range, with the range's owner as its only real server, sends them
home (IPVS looks a packet up by mark before address and port).

The marks live on the LAN interface's ingress (clsact qdisc), in two levels of tc flower
filters: in chain 0 one filter per block of VIPs (the VIP set as CIDR blocks, a /24 is one
filter) jumps to chain TC_CHAIN, where one filter per range and protocol sets the range's mark.
IPv4 filters sit at preference TC_PREF, IPv6 ones at TC_PREF6: the kernel keeps one protocol per
preference of a chain (tc: "Filter with specified priority/protocol not found" for an IPv6
filter at an IPv4 one's preference), and flower matches addresses and ports only for the
protocol of its preference. The marks are the same for both: a firewall-mark service is per
address family, so one mark has an IPv4 and an IPv6 service. Nothing else in chain 0 or
TC_CHAIN is ours, nor any other preference.
"""

from __future__ import annotations

from collections.abc import Iterable

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


@frozen
class RangeFilter:
    """TC_CHAIN: packets of `proto` to a port in first..last get the range's mark.
    Its tc handle is the protocol number << 16 | first port."""

    proto: str = field(validator=in_(tuple(_PROTO_NUMBERS)))
    first: int = field(validator=_port)
    last: int = field(validator=_port)
    ipv6: bool = False  # matches IPv6 packets (at TC_PREF6)

    @property
    def mark(self) -> int:
        return mark_of(self.first)

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


def range_filters(members: Iterable[MemberRange], ipv6: bool = False) -> frozenset[RangeFilter]:
    """One filter per range and protocol; `ipv6`: for IPv6 packets."""
    return frozenset(
        RangeFilter(proto, m.first, m.last, ipv6) for m in members for proto in _PROTO_NUMBERS
    )
