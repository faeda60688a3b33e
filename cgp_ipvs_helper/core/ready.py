"""The ACTIVATE from standby, planned while standby: everything but its real servers.

Of what an ACTIVATE from standby changes, only the real servers of the VIPs' services depend on
the member list it brings: the services, the steering of the member map (its ranges, services
and filters are the map's, whoever is listed), the sync daemons' switch, the VIPs on the LAN
interface and the announcement round are known as soon as the VIP file, the member map and the
kernel's state are. `prepare()` plans them then, with their log texts (and the kernel builds
their messages: `Kernel.prepare`); at ACTIVATE, `activation()` adds the real servers the planner
gives every service for the members (`realservers.real_server_changes`: one AddDests value per
family) instead of thousands of values planned again.

With its AddDests values expanded (`operations.each`), it equals
`plan(member_map.desired(desired_state(.., TAKING_OVER, members, ..)), state)` plus the
announcement exactly when `state` holds no service of ours (then there is no real server to
keep, change or delete): `prepare()` returns None otherwise, and the helper plans in full.
tests/unit/test_ready.py checks the equality on generated states and maps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
from attrs import frozen

from cgp_ipvs_helper.core.members import Resolver
from cgp_ipvs_helper.core.protocol import logged
from cgp_ipvs_helper.plan.model import KernelState, Role, Settings
from cgp_ipvs_helper.plan.operations import AddService, Operation, prepare_real_servers
from cgp_ipvs_helper.plan.outgoing import MemberMap
from cgp_ipvs_helper.plan.planner import announce, desired_state, holds_ours, plan, weights
from cgp_ipvs_helper.plan.realservers import Families, families, real_server_changes


@frozen(eq=False)
class Ready:
    """An ACTIVATE from standby planned against `state` for `vips`, `retired` and `member_map` (a
    copy of the member map as it was), less the real servers of the VIPs' services
    (`families`: IPv6 or not, and the services): `before` ends with the services' additions,
    `after` follows those real servers, `garp` is the announcement; `logged` holds the info
    line of each, encoded; `members` checks the ACTIVATE's members against `state`."""

    state: KernelState
    vips: tuple[str, ...]
    retired: frozenset[str]
    member_map: MemberMap
    before: tuple[Operation, ...]
    after: tuple[Operation, ...]
    garp: tuple[Operation, ...]
    families: Families
    logged: Mapping[Operation, bytes]
    members: Resolver

    def ops(self) -> tuple[Operation, ...]:
        """Every operation built ahead, for `Kernel.prepare`."""
        return self.before + self.after + self.garp

    def fits(
        self,
        vips: tuple[str, ...],
        retired: frozenset[str],
        member_map: MemberMap,
        state: KernelState,
    ) -> bool:
        """Still the plan for these VIPs, this member map and this state (the same values)?"""
        return (
            self.vips == vips
            and self.retired == retired
            and self.member_map == member_map
            and self.state == state
        )


def prepare(
    settings: Settings,
    vips: tuple[str, ...],
    retired: frozenset[str],
    member_map: MemberMap,
    state: KernelState,
) -> Ready | None:
    """Plan the ACTIVATE from `state` with no members yet; None if `state` holds a service of
    ours (then the real servers to plan depend on what is there): plan() in full then."""
    members6 = member_map.ipv6()
    desired = desired_state(settings, vips, Role.TAKING_OVER, (), None, retired, members6)
    desired = member_map.desired(desired, True, vips, state)
    if holds_ours(state, desired.scope):
        return None
    ops = plan(desired, state)
    split = max((i + 1 for i, op in enumerate(ops) if isinstance(op, AddService)), default=0)
    services = tuple(
        op.service.key
        for op in ops[:split]
        if isinstance(op, AddService) and not op.service.key.fwmark  # steering: the map's own
    )
    garp = announce(vips, settings.iface, members6)
    kept = {op: logged(op) for op in ops + garp}
    prepare_real_servers(services)
    copy = attrs.evolve(member_map)
    checks, by_family = Resolver.of(settings, vips, state), families(services)
    before, after = ops[:split], ops[split:]
    return Ready(state, vips, retired, copy, before, after, garp, by_family, kept, checks)


def activation(
    ready: Ready, settings: Settings, members: Sequence[str], self_ip: str
) -> tuple[Operation, ...]:
    """The ACTIVATE's operations for `members`, the announcement last."""
    after = weights(settings, Role.ACTIVE, members, self_ip)
    dests = real_server_changes(ready.families, {}, after, ready.member_map.ipv6())
    return ready.before + dests + ready.after + ready.garp
