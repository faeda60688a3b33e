"""While active: the real servers this helper last made, so that a change of the members costs
what it changes.

An ACTIVATE to the balancer already active (a member joined or left the group) changes only the
real servers of the VIPs' services: the services, the steering (the map's members own their
range services, listed or not), the sync daemon and the VIPs on the LAN interface stay. Once a
converge has succeeded, `Balance` remembers for which VIP file, retired VIPs and member map the
kernel was made, its families of services, the members' weights, the announcement round and its
log lines, and the member checks of that state. The next ACTIVATE then plans against it
(`change()`: `realservers.real_server_changes`, the real servers that change, one value per family
and kind) instead of reading the whole IPVS table back and planning it again.

What it trusts: the kernel as this helper left it. The periodic refresh still reads the kernel
and repairs what changed behind the helper's back; a change that makes one of these operations
fail is read and repaired at once (converge.py). A change behind its back that fails nothing (a
real server of ours added or re-weighted by hand, an address of this host added) waits for the
refresh, at most -t seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
from attrs import frozen

from cgp_ipvs_helper.core.members import Resolver
from cgp_ipvs_helper.core.protocol import logged
from cgp_ipvs_helper.plan.model import Role, Settings
from cgp_ipvs_helper.plan.operations import Operation
from cgp_ipvs_helper.plan.outgoing import MemberMap
from cgp_ipvs_helper.plan.planner import weights
from cgp_ipvs_helper.plan.realservers import Families, real_server_changes


@frozen(eq=False)
class Balance:
    """The kernel as the last converge made it while active: for `vips`, `retired` and
    `member_map` (a copy), the VIPs' services by family with the members `weights` (member ->
    weight) on each, the announcement round `garp` with its info lines joined (`logged`), and the
    member checks (`members`) of the state it was planned against."""

    vips: tuple[str, ...]
    retired: frozenset[str]
    member_map: MemberMap
    families: Families
    weights: Mapping[str, int]
    garp: tuple[Operation, ...]
    logged: bytes
    members: Resolver

    @classmethod
    def of(
        cls,
        vips: tuple[str, ...],
        retired: frozenset[str],
        member_map: MemberMap,
        families: Families,
        weights: Mapping[str, int],
        garp: tuple[Operation, ...],
        members: Resolver,
        logged_: Mapping[Operation, bytes] | None = None,
    ) -> Balance:
        lines = b"".join(logged_[op] if logged_ else logged(op) for op in garp)
        copy = attrs.evolve(member_map)
        return cls(vips, retired, copy, families, dict(weights), garp, lines, members)

    def fits(self, vips: tuple[str, ...], retired: frozenset[str], member_map: MemberMap) -> bool:
        """Still the kernel's state for these VIPs and this member map (the same values)?"""
        return self.vips == vips and self.retired == retired and self.member_map == member_map

    def change(
        self, settings: Settings, members: Sequence[str], self_ip: str
    ) -> tuple[tuple[Operation, ...], Balance]:
        """The ACTIVATE's real servers that change for `members` (the announcement round
        follows them), and the balance they leave."""
        after = weights(settings, Role.ACTIVE, members, self_ip)
        ops = real_server_changes(self.families, self.weights, after, self.member_map.ipv6())
        return ops, attrs.evolve(self, weights=after)
