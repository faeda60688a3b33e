"""The takeover's reset guard (pure): while a new balancer takes over, its TCP resets from a VIP
are dropped on the LAN interface's egress.

The old balancer's sync master batches connection entries (a message goes out once full, or
when its oldest entry is 2 s old), so its youngest connections reach the new balancer after
their packets do. Until then the new balancer's IPVS has no entry for them, passes their
segments to the local stack, and the stack answers each with a reset that ends the connection.
Dropped instead, the reset is not seen: the client sends the segment again, and once the entry
has arrived IPVS forwards it to its real server. The guard lives only as long as the takeover.

One flower filter per block of VIPs (steering.vip_blocks: the same blocks and handles) in chain 0
of the egress of -i's clsact qdisc, IPv4 ones at GUARD_PREF, IPv6 ones at GUARD_PREF6 (one
protocol per preference). Nothing else there is ours.
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import frozen

from cgp_ipvs_helper.plan.steering import TC_PREF6, vip_blocks

GUARD_PREF = TC_PREF6 + 1
GUARD_PREF6 = GUARD_PREF + 1


@frozen
class Guard:
    """Drop TCP resets from the VIP block `prefix`; `handle` as steering.VipFilter numbers it."""

    prefix: str
    handle: int

    @property
    def ipv6(self) -> bool:
        return ":" in self.prefix

    @property
    def pref(self) -> int:
        return GUARD_PREF6 if self.ipv6 else GUARD_PREF


def guards(vips: Iterable[str]) -> frozenset[Guard]:
    """The guards of the balanced VIPs."""
    return frozenset(Guard(b.prefix, b.handle) for b in vip_blocks(vips))
