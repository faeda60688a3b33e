"""A member as a real server of a VIP (by the VIP's family), the order of addresses and services,
and the real servers that change between two sets of members, one value per family."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from itertools import groupby
from types import MappingProxyType

from cgp_ipvs_helper.plan.model import ServiceKey, is_ipv6
from cgp_ipvs_helper.plan.operations import AddDests, DelDests, EditDests, ManyDests

NO_IPV6: Mapping[str, str] = MappingProxyType({})  # no member's IPv6 address known


def real_servers(member: str, vip: str, members6: Mapping[str, str]) -> tuple[str, ...]:
    """The address of `member` as a real server of `vip`: of the VIP's family, if it has one."""
    if not is_ipv6(vip):
        return (member,)
    ip6 = members6.get(member)
    return (ip6,) if ip6 else ()


def ip_order(ip: str) -> bytes:
    """Sort key of an address: IPv4 before IPv6, each in numeric order."""
    if is_ipv6(ip):
        return b"\6" + socket.inet_pton(socket.AF_INET6, ip)
    return b"\4" + socket.inet_aton(ip)


def key_order(key: ServiceKey) -> tuple[int, bytes, str, int]:
    return (key.fwmark, ip_order(key.vip), key.proto, key.port)


Families = tuple[tuple[bool, tuple[ServiceKey, ...]], ...]
"""The VIPs' services by family (IPv6 or not; IPv4 first), each in plan order."""


def families(keys: Iterable[ServiceKey]) -> Families:
    """`keys` (VIP services, no firewall-mark one) by family, each in plan order."""
    ordered = sorted(keys, key=key_order)
    return tuple((v6, tuple(group)) for v6, group in groupby(ordered, _vip_ipv6))


def _vip_ipv6(key: ServiceKey) -> bool:
    return is_ipv6(key.vip)


def real_server_changes(
    services: Families,
    before: Mapping[str, int],
    after: Mapping[str, int],
    members6: Mapping[str, str] = NO_IPV6,
) -> tuple[ManyDests, ...]:
    """The operations that take the real servers of the VIPs' services from the members
    `before` to the members `after` (member -> weight): the new ones given, then those whose
    weight changed, then those gone taken; one value per family of each. plan() makes the same
    (AddDests and its kin expanded) when the kernel holds exactly `before` on those services and
    they stay; and a takeover's real servers, before = {}.

    Its work is the real servers that change (one value per family, made as they are sent),
    not the whole table: a member that leaves a group of a thousand VIPs costs the helper what
    taking its real servers costs the kernel.
    """
    kinds: tuple[list[ManyDests], ...] = ([], [], [])
    for _v6, keys in services:
        if not keys:
            continue
        vip = keys[0].vip  # (any of the family's)
        old, new = _servers(before, vip, members6), _servers(after, vip, members6)
        changes = (
            tuple((ip, w) for ip, w in new.items() if ip not in old),
            tuple((ip, w) for ip, w in new.items() if ip in old and old[ip] != w),
            tuple((ip, w) for ip, w in old.items() if ip not in new),
        )
        for ops, kind, servers in zip(kinds, (AddDests, EditDests, DelDests), changes):
            if servers:
                ops.append(kind(keys, servers))
    return (*kinds[0], *kinds[1], *kinds[2])


def _servers(weight: Mapping[str, int], vip: str, members6: Mapping[str, str]) -> dict[str, int]:
    """The real servers (address -> weight) of the services of `vip`'s family, in order."""
    pairs = ((ip, w) for m, w in weight.items() for ip in real_servers(m, vip, members6))
    return dict(sorted(pairs, key=_first))


def _first(pair: tuple[str, int]) -> bytes:
    return ip_order(pair[0])
